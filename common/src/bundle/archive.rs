//! The tar layer of a bundle: a strict, streaming reader and a writer of
//! plain members, built on the `tar` crate's header type.
//!
//! Owns: 512-byte blocks, header checksums, member types (regular files
//! only; GNU long names for paths of 100 bytes and more), data padding, and
//! the end-of-archive marker (two zero blocks, then only zeros to the end).
//! The reader never seeks and holds one 64 KiB buffer.
//! Must not: know what the members mean (see `read`).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::BundleError;

const BLOCK: usize = 512;
/// The chunk every payload is read and written in.
pub(super) const CHUNK: usize = 64 << 10;
/// Longest GNU long name accepted.
const MAX_LONG_NAME: u64 = 4096;
/// What [`TarReader::next`] is told to expect after the last member.
pub(super) const END_MARKER: &str = "the end-of-archive marker";

/// A member's header.
#[derive(Debug)]
pub(super) struct Member {
    pub path: String,
    pub size: u64,
}

/// Reads a tar front to back.
pub(super) struct TarReader<R> {
    inner: R,
    file: PathBuf,
    /// Bytes consumed so far.
    offset: u64,
    buf: Vec<u8>,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R, file: &Path) -> Self {
        TarReader { inner, file: file.to_owned(), offset: 0, buf: vec![0; CHUNK] }
    }

    /// Fills `buf` completely; `Ok(false)` when the stream ended before its
    /// first byte, `Truncated` when it ended inside it.
    fn fill(&mut self, buf: &mut [u8], inside: &str) -> Result<bool, BundleError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => {
                    return Err(BundleError::Truncated {
                        file: self.file.clone(),
                        member: inside.to_owned(),
                        detail: format!("{got} of {} bytes at byte {}", buf.len(), self.offset),
                    })
                }
                Ok(n) => {
                    got += n;
                    self.offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(BundleError::Read { file: self.file.clone(), source }),
            }
        }
        Ok(true)
    }

    fn bad_header(&self, at: u64, reason: impl Into<String>) -> BundleError {
        BundleError::BadHeader { file: self.file.clone(), offset: at, reason: reason.into() }
    }

    /// One header block; `None` at the end-of-archive marker (after which
    /// only zeros may follow). `expecting` names what the caller waits for.
    fn header(&mut self, expecting: &str) -> Result<Option<[u8; BLOCK]>, BundleError> {
        let at = self.offset;
        let mut block = [0u8; BLOCK];
        if !self.fill(&mut block, &format!("the header of {expecting}"))? {
            if expecting == END_MARKER {
                let detail = format!("the archive stops at byte {at} without it");
                return Err(BundleError::Truncated { file: self.file.clone(), member: END_MARKER.to_owned(), detail });
            }
            return Err(BundleError::MissingMember { file: self.file.clone(), expected: expecting.to_owned() });
        }
        if block.iter().all(|&b| b == 0) {
            let mut second = [0u8; BLOCK];
            if !self.fill(&mut second, END_MARKER)? || second.iter().any(|&b| b != 0) {
                return Err(self.bad_header(at, "a zero block not followed by a second one (a broken end-of-archive marker)"));
            }
            self.expect_only_zeros()?;
            return Ok(None);
        }
        let header = tar::Header::from_byte_slice(&block);
        let stored = header.cksum().map_err(|e| self.bad_header(at, format!("unreadable checksum: {e}")))?;
        let computed: u32 = block.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u32::from(b) }).sum();
        if stored != computed {
            return Err(self.bad_header(at, format!("checksum {stored} does not match the header's bytes ({computed})")));
        }
        Ok(Some(block))
    }

    /// After the marker: anything but zeros is data appended to the bundle.
    fn expect_only_zeros(&mut self) -> Result<(), BundleError> {
        loop {
            let n = match self.inner.read(&mut self.buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(BundleError::Read { file: self.file.clone(), source }),
            };
            if self.buf[..n].iter().any(|&b| b != 0) {
                let at = self.offset;
                return Err(self.bad_header(at, "data after the end-of-archive marker"));
            }
            self.offset += n as u64;
        }
    }

    /// The next member, or `None` at the end of the archive. Anything but a
    /// regular file is refused, naming its path and type.
    pub fn next(&mut self, expecting: &str) -> Result<Option<Member>, BundleError> {
        let at = self.offset;
        let Some(block) = self.header(expecting)? else { return Ok(None) };
        let mut header = tar::Header::from_byte_slice(&block).clone();
        let mut long_name = None;
        if header.entry_type() == tar::EntryType::GNULongName {
            let size = header.entry_size().map_err(|e| self.bad_header(at, e.to_string()))?;
            if size > MAX_LONG_NAME {
                return Err(self.bad_header(at, format!("a long name of {size} bytes")));
            }
            let mut name = Vec::with_capacity(size as usize);
            self.data(size, expecting, |chunk| {
                name.extend_from_slice(chunk);
                Ok(())
            })?;
            while name.last() == Some(&0) {
                name.pop();
            }
            long_name = Some(name);
            let at = self.offset;
            let Some(next) = self.header(expecting)? else {
                return Err(self.bad_header(at, "a long name with no member after it"));
            };
            header = tar::Header::from_byte_slice(&next).clone();
            if header.entry_type() == tar::EntryType::GNULongName {
                return Err(self.bad_header(at, "two long names in a row"));
            }
        }
        let raw = long_name.unwrap_or_else(|| header.path_bytes().into_owned());
        let path = String::from_utf8(raw)
            .map_err(|e| self.bad_header(at, format!("a member name that is not UTF-8: {:?}", String::from_utf8_lossy(e.as_bytes()))))?;
        let kind = match header.entry_type() {
            tar::EntryType::Regular => None,
            tar::EntryType::Symlink => Some("symbolic link"),
            tar::EntryType::Link => Some("hard link"),
            tar::EntryType::Directory => Some("directory"),
            tar::EntryType::Char => Some("character device"),
            tar::EntryType::Block => Some("block device"),
            tar::EntryType::Fifo => Some("FIFO"),
            tar::EntryType::XHeader | tar::EntryType::XGlobalHeader => Some("pax extended header"),
            _ => Some("special member"),
        };
        if let Some(found) = kind {
            return Err(BundleError::MemberType { file: self.file.clone(), member: path, found: found.to_owned() });
        }
        let size = header.entry_size().map_err(|e| self.bad_header(at, format!("{path}: unreadable size: {e}")))?;
        Ok(Some(Member { path, size }))
    }

    /// Reads exactly `size` bytes of data in chunks of at most 64 KiB, then
    /// the padding to the next block. `member` names it when truncated.
    pub fn data(&mut self, size: u64, member: &str, mut sink: impl FnMut(&[u8]) -> Result<(), BundleError>) -> Result<(), BundleError> {
        let mut left = size;
        let mut buf = std::mem::take(&mut self.buf);
        let result = (|| {
            while left > 0 {
                let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
                let n = match self.inner.read(&mut buf[..want]) {
                    Ok(0) => {
                        return Err(BundleError::Truncated {
                            file: self.file.clone(),
                            member: member.to_owned(),
                            detail: format!("{} of {size} bytes", size - left),
                        })
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(source) => return Err(BundleError::Read { file: self.file.clone(), source }),
                };
                self.offset += n as u64;
                left -= n as u64;
                sink(&buf[..n])?;
            }
            let pad = padding(size);
            if pad > 0 {
                let mut zeros = [0u8; BLOCK];
                if !self.fill(&mut zeros[..pad], member)? {
                    return Err(BundleError::Truncated {
                        file: self.file.clone(),
                        member: member.to_owned(),
                        detail: "the padding after its data".to_owned(),
                    });
                }
            }
            Ok(())
        })();
        self.buf = buf;
        result
    }

    /// A member's whole data, refused above `limit` before a byte is read.
    pub fn small(&mut self, member: &Member, limit: u64) -> Result<Vec<u8>, BundleError> {
        if member.size > limit {
            return Err(BundleError::TooLarge { file: self.file.clone(), member: member.path.clone(), found: member.size, limit });
        }
        let mut out = Vec::with_capacity(member.size as usize);
        let name = member.path.clone();
        self.data(member.size, &name, |chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(out)
    }
}

/// Bytes of zeros after `size` bytes of data.
fn padding(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

/// Writes a tar of regular files.
pub(super) struct TarWriter<W> {
    inner: W,
    mtime: u64,
}

impl<W: Write> TarWriter<W> {
    /// Every member gets `mtime` (the manifest's `created`), uid/gid 0.
    pub fn new(inner: W, mtime: u64) -> Self {
        TarWriter { inner, mtime }
    }

    /// A member's header (and a GNU long-name member before it when the path
    /// needs one); its data follows through [`TarWriter::data`] and [`TarWriter::end_member`].
    pub fn header(&mut self, path: &str, size: u64, mode: u32) -> io::Result<()> {
        let bytes = path.as_bytes();
        let mut header = self.blank(size, mode, tar::EntryType::Regular);
        if bytes.len() >= 100 {
            let mut long = self.blank(bytes.len() as u64 + 1, 0o644, tar::EntryType::GNULongName);
            long.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
            long.set_cksum();
            self.inner.write_all(long.as_bytes())?;
            self.inner.write_all(bytes)?;
            self.inner.write_all(&[0])?;
            self.end_member(bytes.len() as u64 + 1)?;
            header.as_old_mut().name[..99].copy_from_slice(&bytes[..99]);
        } else {
            header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        }
        header.set_cksum();
        self.inner.write_all(header.as_bytes())
    }

    fn blank(&self, size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(mode);
        header.set_mtime(self.mtime);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(kind);
        header
    }

    pub fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)
    }

    /// The padding after a member of `size` bytes.
    pub fn end_member(&mut self, size: u64) -> io::Result<()> {
        self.inner.write_all(&[0u8; BLOCK][..padding(size)])
    }

    /// A whole member from memory.
    pub fn member(&mut self, path: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
        self.header(path, bytes.len() as u64, mode)?;
        self.data(bytes)?;
        self.end_member(bytes.len() as u64)
    }

    /// The end-of-archive marker; returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.inner.write_all(&[0u8; 2 * BLOCK])?;
        Ok(self.inner)
    }
}
