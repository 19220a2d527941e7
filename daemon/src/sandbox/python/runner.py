# The runner of edgeaid's Python sandbox (daemon/src/sandbox/python): run
# with `python3 -I -B -c`, already confined by landlock, seccomp and rlimits.
# It imports what it needs, then blocks reading one request (JSON: code,
# inputs, forbidden modules, output cap) from stdin, runs `main(**inputs)`
# once and writes one reply line to the saved stdout: {"ok": {...}} or
# {"error": {"kind": ..., "message": ..., "line": n}}. The process is never
# reused. The import guard below is for clear messages, not security: the
# OS sandbox is the barrier.
import builtins
import json
import os
import sys
import traceback


class _Denied(ImportError):
    def __init__(self, reason, name):
        super().__init__(f"{reason} is not allowed in a code node", name=name)
        self.reason = reason


class _DeniedCall(PermissionError):
    def __init__(self, reason):
        super().__init__(f"{reason} is not allowed in a code node")
        self.reason = reason


def _main():
    reply_fd = os.dup(1)
    os.dup2(2, 1)
    request = json.loads(sys.stdin.buffer.read())
    forbidden = frozenset(request["forbidden"])

    class _Guard:
        @staticmethod
        def find_spec(name, path=None, target=None):
            top = name.partition(".")[0]
            if top in forbidden:
                raise _Denied(f"import of module '{top}'", name)
            return None

    sys.meta_path.insert(0, _Guard)
    for name in list(sys.modules):
        if name.partition(".")[0] in forbidden:
            del sys.modules[name]

    def _refuse(fname):
        def refused(*args, **kwargs):
            raise _DeniedCall(f"os.{fname}()")
        return refused

    for fname in request["forbidden_os"]:
        if hasattr(os, fname):
            setattr(os, fname, _refuse(fname))

    data = _run(request)
    if len(data) > request["max_output"] + 64:
        data = b'{"error": {"kind": "output"}}\n'
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    view = memoryview(data)
    while view:
        view = view[os.write(reply_fd, view):]
    os._exit(0)


def _reply(reply):
    return (json.dumps(reply) + "\n").encode()


def _error(kind, exc=None, message=None):
    line = None
    if exc is not None:
        if isinstance(exc, SyntaxError) and exc.filename == "<code>":
            line = exc.lineno
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == "<code>":
                line = tb.tb_lineno
            tb = tb.tb_next
        if message is None:
            message = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return _reply({"error": {"kind": kind, "message": message, "line": line}})


def _run(request):
    try:
        code = compile(request["code"], "<code>", "exec")
        scope = {"__name__": "__main__", "__builtins__": builtins}
        exec(code, scope)
        main = scope.get("main")
        if not callable(main):
            return _reply({"error": {"kind": "nomain"}})
        result = main(**request["inputs"])
        if not isinstance(result, dict):
            return _reply({"error": {"kind": "notdict", "message": type(result).__name__}})
        # NaN, infinities and unserialisable values are the code's error.
        text = json.dumps(result, ensure_ascii=False, allow_nan=False)
        return ('{"ok": ' + text + "}\n").encode("utf-8")
    except MemoryError as e:
        return _error("memory", e, "MemoryError")
    except (_Denied, _DeniedCall) as e:
        return _error("denied", e, e.reason)
    except PermissionError as e:
        return _error("denied", e)
    except BaseException as e:
        try:
            return _error("code", e)
        except MemoryError:
            return _reply({"error": {"kind": "memory"}})


_main()
