//! js: JavaScript code nodes in QuickJS (rquickjs), linked into edgeaid.
//!
//! Every run gets a fresh runtime and context, so nothing one run does
//! (a global, a polluted `Object.prototype`) is seen by the next. The
//! context has the language's own objects only: no `require`, no modules,
//! no file system, no network, no timers (QuickJS's `os`/`std` modules are
//! not linked). Limits: the runtime's heap limit (`RunLimits::memory_bytes`,
//! an allocation past it throws `out of memory`), a 512 KB JS stack, and an
//! interrupt handler that stops the run at its deadline, loops included.
//! `console.log` and friends exist (Dify's code uses them) and print nowhere.
//!
//! Dify's contract: the code defines `function main({arg1, arg2})`, which
//! is called with one object of the inputs and returns an object; the
//! result goes through `JSON.stringify` as in Dify's Node.js runner.
//! Blocking: the caller runs it on a blocking thread.

use std::time::Instant;

use rquickjs::context::EvalOptions;
use rquickjs::{Context, Ctx, Function, Runtime, Value as JsValue};
use serde_json::{Map, Value};

use super::{RunLimits, SandboxError};

/// The file name errors give for the node's code.
const FILE_NAME: &str = "code.js";
/// Largest JS call stack.
const MAX_STACK_BYTES: usize = 512 * 1024;
/// Defined before the node's code: a console that prints nowhere.
const PRELUDE: &str = "globalThis.console = { log() {}, info() {}, warn() {}, error() {}, debug() {} };";

/// The engine's name and version, for `status`.
pub fn runtime_name() -> &'static str {
    "QuickJS (rquickjs 0.14)"
}

/// Runs `main(inputs)` in a fresh runtime and returns the object it
/// returned.
pub fn run(code: &str, inputs: &Map<String, Value>, limits: &RunLimits) -> Result<Map<String, Value>, SandboxError> {
    let started = Instant::now();
    let deadline = started + limits.timeout;
    let runtime = Runtime::new().map_err(|e| SandboxError::Internal(format!("QuickJS runtime: {e}")))?;
    runtime.set_memory_limit(usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX));
    runtime.set_max_stack_size(MAX_STACK_BYTES);
    runtime.set_interrupt_handler(Some(Box::new(move || Instant::now() >= deadline)));
    let context = Context::full(&runtime).map_err(|e| oom_or(e, limits, "QuickJS context"))?;
    let input_json = serde_json::to_string(inputs).map_err(|e| SandboxError::Internal(format!("inputs: {e}")))?;
    let result = context.with(|ctx| -> Result<String, SandboxError> {
        let fail = |e: rquickjs::Error| error_of(&ctx, e, limits, deadline);
        ctx.eval::<(), _>(PRELUDE).map_err(fail)?;
        let mut options = EvalOptions::default();
        options.strict = false;
        options.filename = Some(FILE_NAME.to_owned());
        if code.contains('\0') {
            return Err(SandboxError::Code("SyntaxError: the code contains a NUL character".into()));
        }
        ctx.eval_with_options::<(), _>(code, options).map_err(fail)?;
        let main: JsValue = ctx.globals().get("main").map_err(fail)?;
        let Some(main) = main.as_function().cloned() else {
            return Err(SandboxError::NoMain);
        };
        let main: Function = main;
        let arg = ctx.json_parse(input_json).map_err(fail)?;
        let out: JsValue = main.call((arg,)).map_err(fail)?;
        if !out.is_object() || out.is_array() || out.is_function() {
            return Err(SandboxError::NotAnObject(js_type(&out).to_owned()));
        }
        match ctx.json_stringify(out).map_err(fail)? {
            Some(s) => s.to_string().map_err(fail),
            None => Err(SandboxError::NotAnObject("undefined".into())),
        }
    })?;
    if result.len() > limits.max_output_bytes {
        return Err(SandboxError::OutputTooLarge(limits.max_output_bytes));
    }
    match serde_json::from_str::<Value>(&result) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(SandboxError::NotAnObject(json_type(&other).to_owned())),
        Err(e) => Err(SandboxError::Code(format!("the result is not valid JSON: {e}"))),
    }
}

/// The JS type name of a value, as `typeof` (arrays and null by name).
fn js_type(v: &JsValue) -> &'static str {
    if v.is_null() {
        "null"
    } else if v.is_undefined() {
        "undefined"
    } else if v.is_array() {
        "array"
    } else if v.is_function() {
        "function"
    } else if v.is_string() {
        "string"
    } else if v.is_bool() {
        "boolean"
    } else if v.is_number() {
        "number"
    } else {
        "object"
    }
}

/// A JSON value's type, as JavaScript names it.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn oom_or(e: rquickjs::Error, limits: &RunLimits, what: &str) -> SandboxError {
    match e {
        rquickjs::Error::Allocation => SandboxError::Memory(limits.memory_bytes),
        e => SandboxError::Internal(format!("{what}: {e}")),
    }
}

/// The thrown value of a failed call, as a node error: `Name: message
/// (line N)`; the interrupt and the heap limit as their own errors.
fn error_of(ctx: &Ctx<'_>, e: rquickjs::Error, limits: &RunLimits, deadline: Instant) -> SandboxError {
    if !matches!(e, rquickjs::Error::Exception) {
        return oom_or(e, limits, "QuickJS");
    }
    let thrown = ctx.catch();
    let (name, message, stack) = match thrown.as_exception() {
        Some(ex) => (
            ex.get::<_, Option<String>>("name").ok().flatten().unwrap_or_else(|| "Error".into()),
            ex.message().unwrap_or_default(),
            ex.stack(),
        ),
        None => {
            let text = thrown
                .as_string()
                .and_then(|s| s.to_string().ok())
                .or_else(|| ctx.json_stringify(thrown.clone()).ok().flatten().and_then(|s| s.to_string().ok()))
                .unwrap_or_else(|| js_type(&thrown).to_owned());
            ("Uncaught".to_owned(), text, None)
        }
    };
    if name == "InternalError" && message == "interrupted" && Instant::now() >= deadline {
        return SandboxError::Timeout(limits.timeout);
    }
    if name == "InternalError" && message == "out of memory" {
        return SandboxError::Memory(limits.memory_bytes);
    }
    match stack.as_deref().and_then(code_line) {
        Some(line) => SandboxError::Code(format!("{name}: {message} (line {line})")),
        None => SandboxError::Code(format!("{name}: {message}")),
    }
}

/// The line in the node's code where a stack trace's first frame in it is.
fn code_line(stack: &str) -> Option<u32> {
    let at = stack.find(&format!("{FILE_NAME}:"))? + FILE_NAME.len() + 1;
    let digits: String = stack[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests;
