//! A small GGUF metadata rewriter, to make test models out of the default
//! one: it reads the header and the key-value pairs, replaces or adds the
//! given keys, keeps the tensor infos as they are and writes the tensor data
//! after them, re-aligned to `general.alignment`. Tensor offsets are
//! relative to the data section, so the copy stays a valid model.
//! Owns the GGUF v2/v3 container format only; knows no model semantics.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// GGUF value type ids.
const T_UINT32: u32 = 4;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value to write.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    Str(String),
    Bool(bool),
    U32(u32),
}

impl MetaValue {
    fn type_id(&self) -> u32 {
        match self {
            MetaValue::Str(_) => T_STRING,
            MetaValue::Bool(_) => T_BOOL,
            MetaValue::U32(_) => T_UINT32,
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            MetaValue::Str(s) => {
                let mut v = (s.len() as u64).to_le_bytes().to_vec();
                v.extend_from_slice(s.as_bytes());
                v
            }
            MetaValue::Bool(b) => vec![u8::from(*b)],
            MetaValue::U32(n) => n.to_le_bytes().to_vec(),
        }
    }
}

/// One key-value pair as read: its type and its encoded value, untouched.
struct RawKv {
    key: String,
    type_id: u32,
    value: Vec<u8>,
}

/// Copies the GGUF file `src` to `dst` with `edits` applied to its
/// metadata (an existing key is replaced in place, a new one appended).
pub fn rewrite(src: &Path, dst: &Path, edits: &[(&str, MetaValue)]) -> io::Result<()> {
    let mut r = BufReader::new(File::open(src)?);
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)?;
    if &magic != b"GGUF" {
        return Err(invalid(format!("{} is not a GGUF file", src.display())));
    }
    let version = read_u32(&mut r)?;
    if !(2..=3).contains(&version) {
        return Err(invalid(format!("GGUF version {version} is not supported")));
    }
    let n_tensors = read_u64(&mut r)?;
    let n_kv = read_u64(&mut r)?;
    let mut kvs = Vec::new();
    for _ in 0..n_kv {
        let key = read_string(&mut r)?;
        let type_id = read_u32(&mut r)?;
        let mut value = Vec::new();
        read_value(&mut r, type_id, &mut value)?;
        kvs.push(RawKv { key, type_id, value });
    }
    // Tensor infos: name, n_dims, dims, type, offset; kept byte for byte.
    let mut infos = Vec::new();
    for _ in 0..n_tensors {
        let name = read_string(&mut r)?;
        infos.extend_from_slice(&(name.len() as u64).to_le_bytes());
        infos.extend_from_slice(name.as_bytes());
        let n_dims = read_u32(&mut r)?;
        infos.extend_from_slice(&n_dims.to_le_bytes());
        copy_bytes(&mut r, u64::from(n_dims) * 8 + 4 + 8, &mut infos)?;
    }
    let alignment = kvs
        .iter()
        .find(|kv| kv.key == "general.alignment" && kv.type_id == T_UINT32)
        .and_then(|kv| kv.value.get(..4))
        .map_or(DEFAULT_ALIGNMENT, |b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])));
    let data_at = align(r.stream_position()?, alignment);

    for (key, value) in edits {
        let kv = RawKv { key: (*key).to_owned(), type_id: value.type_id(), value: value.encode() };
        match kvs.iter_mut().find(|k| k.key == *key) {
            Some(existing) => *existing = kv,
            None => kvs.push(kv),
        }
    }

    let mut w = BufWriter::new(File::create(dst)?);
    let mut header = b"GGUF".to_vec();
    header.extend_from_slice(&version.to_le_bytes());
    header.extend_from_slice(&n_tensors.to_le_bytes());
    header.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for kv in &kvs {
        header.extend_from_slice(&(kv.key.len() as u64).to_le_bytes());
        header.extend_from_slice(kv.key.as_bytes());
        header.extend_from_slice(&kv.type_id.to_le_bytes());
        header.extend_from_slice(&kv.value);
    }
    header.extend_from_slice(&infos);
    let padded = align(header.len() as u64, alignment);
    header.resize(padded as usize, 0);
    w.write_all(&header)?;
    r.seek(SeekFrom::Start(data_at))?;
    io::copy(&mut r, &mut w)?;
    w.flush()
}

fn align(at: u64, alignment: u64) -> u64 {
    at.div_ceil(alignment) * alignment
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_string(r: &mut impl Read) -> io::Result<String> {
    let len = read_u64(r)?;
    let mut b = Vec::new();
    copy_bytes(r, len, &mut b)?;
    String::from_utf8(b).map_err(|e| invalid(format!("a GGUF string is not UTF-8: {e}")))
}

fn copy_bytes(r: &mut impl Read, n: u64, out: &mut Vec<u8>) -> io::Result<()> {
    let got = r.take(n).read_to_end(out)?;
    if got as u64 != n {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the GGUF header is truncated"));
    }
    Ok(())
}

/// Appends the encoded value of type `type_id` read from `r` to `out`.
fn read_value(r: &mut impl Read, type_id: u32, out: &mut Vec<u8>) -> io::Result<()> {
    let scalar = match type_id {
        0 | 1 | 7 => 1, // u8, i8, bool
        2 | 3 => 2,     // u16, i16
        4..=6 => 4,     // u32, i32, f32
        10..=12 => 8,   // u64, i64, f64
        _ => 0,
    };
    if scalar > 0 {
        return copy_bytes(r, scalar, out);
    }
    match type_id {
        T_STRING => {
            let len = read_u64(r)?;
            out.extend_from_slice(&len.to_le_bytes());
            copy_bytes(r, len, out)
        }
        T_ARRAY => {
            let elem = read_u32(r)?;
            let n = read_u64(r)?;
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
            (0..n).try_for_each(|_| read_value(r, elem, out))
        }
        other => Err(invalid(format!("unknown GGUF value type {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF with two keys and one 1-D f32 tensor of 4 values.
    fn tiny() -> Vec<u8> {
        let mut f = b"GGUF".to_vec();
        f.extend_from_slice(&3u32.to_le_bytes());
        f.extend_from_slice(&1u64.to_le_bytes());
        f.extend_from_slice(&2u64.to_le_bytes());
        let kv = |f: &mut Vec<u8>, k: &str, t: u32, v: &[u8]| {
            f.extend_from_slice(&(k.len() as u64).to_le_bytes());
            f.extend_from_slice(k.as_bytes());
            f.extend_from_slice(&t.to_le_bytes());
            f.extend_from_slice(v);
        };
        kv(&mut f, "general.architecture", T_STRING, &MetaValue::Str("llama".into()).encode());
        let mut arr = T_UINT32.to_le_bytes().to_vec();
        arr.extend_from_slice(&2u64.to_le_bytes());
        arr.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
        kv(&mut f, "some.array", T_ARRAY, &arr);
        f.extend_from_slice(&1u64.to_le_bytes());
        f.extend_from_slice(b"t");
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&4u64.to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&0u64.to_le_bytes());
        f.resize(align(f.len() as u64, 32) as usize, 0);
        f.extend_from_slice(&[7u8; 16]);
        f
    }

    #[test]
    fn rewritten_metadata_keeps_tensors_and_alignment() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
        std::fs::write(&src, tiny()).unwrap();
        let edits = [("general.architecture", MetaValue::Str("llama-longer-name".into())), ("new.flag", MetaValue::Bool(true))];
        rewrite(&src, &dst, &edits).unwrap();
        let out = std::fs::read(&dst).unwrap();
        assert_eq!(&out[..4], b"GGUF");
        assert_eq!(u64::from_le_bytes(out[16..24].try_into().unwrap()), 3, "kv count");
        assert_eq!((out.len() - 16) % 32, 0, "the data section is not aligned");
        assert_eq!(&out[out.len() - 16..], &[7u8; 16], "tensor data");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("llama-longer-name") && text.contains("new.flag") && text.contains("some.array"));
        // Rewriting again with no edits is the identity.
        let again = dir.path().join("c.gguf");
        rewrite(&dst, &again, &[]).unwrap();
        assert_eq!(std::fs::read(&again).unwrap(), out);
    }
}
