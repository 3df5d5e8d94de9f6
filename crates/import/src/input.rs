//! Where captures come from: files, directories, glob patterns or standard input, each read
//! as a stream of lines and decompressed on the fly when it is gzip or zstd.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// Bytes read ahead from a file; large enough that decompression and line splitting, not
/// system calls, set the pace.
const READ_BUFFER: usize = 1 << 20;

/// One capture to read: a file, or standard input (`-`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Input {
    /// A file; gzip and zstd files are recognised by their first bytes, whatever their name.
    File(PathBuf),
    /// Standard input, which may be compressed too.
    Stdin,
}

impl Input {
    /// The name used in messages and reports: the path as given, or `-`.
    pub fn name(&self) -> String {
        match self {
            Input::File(path) => path.display().to_string(),
            Input::Stdin => "-".to_owned(),
        }
    }

    /// Opens the input as lines, decompressing gzip (`1f 8b`) and zstd (`28 b5 2f fd`) as it
    /// reads, never to disk. Concatenated gzip members (as `cat a.gz b.gz` makes) are read
    /// whole.
    pub fn open(&self) -> Result<Box<dyn BufRead + Send>> {
        self.open_counting(Arc::default())
    }

    /// [`Input::open`], adding the bytes read from the file (before decompression) to
    /// `bytes_read` as it goes: progress against [`Input::size`].
    pub fn open_counting(&self, bytes_read: Arc<AtomicU64>) -> Result<Box<dyn BufRead + Send>> {
        let raw: Box<dyn Read + Send> = match self {
            Input::File(path) => Box::new(File::open(path).map_err(|source| Error::Read {
                input: self.name(),
                source,
            })?),
            Input::Stdin => Box::new(io::stdin()),
        };
        let mut raw = BufReader::with_capacity(
            READ_BUFFER,
            Counting {
                inner: raw,
                bytes_read,
            },
        );
        let head = raw.fill_buf().map_err(|source| Error::Read {
            input: self.name(),
            source,
        })?;
        let reader: Box<dyn BufRead + Send> = match Compression::sniff(head) {
            Compression::Gzip => Box::new(BufReader::with_capacity(
                READ_BUFFER,
                flate2::bufread::MultiGzDecoder::new(raw),
            )),
            Compression::Zstd => Box::new(BufReader::with_capacity(
                READ_BUFFER,
                zstd::Decoder::with_buffer(raw).map_err(|source| Error::Read {
                    input: self.name(),
                    source,
                })?,
            )),
            Compression::None => Box::new(raw),
        };
        Ok(reader)
    }

    /// The input's size on disk (compressed), when it is a file.
    pub fn size(&self) -> Option<u64> {
        match self {
            Input::File(path) => std::fs::metadata(path).ok().map(|m| m.len()),
            Input::Stdin => None,
        }
    }
}

/// A reader that counts what passes through it.
struct Counting<R> {
    inner: R,
    bytes_read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// How an input is compressed, from its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// The inputs named by `args`, in a stable order: each argument is standard input (`-`), a
/// file, a directory (every file under it, recursively, hidden ones skipped), or a glob
/// pattern (`caps/*.json.gz`, `**` for any depth). Files inside a directory or matched by a
/// pattern are sorted by path, so the same arguments always give the same order. An argument
/// that names nothing is an error: a typo must not import nothing and succeed.
pub fn expand<S: AsRef<str>>(args: &[S]) -> Result<Vec<Input>> {
    let mut inputs = Vec::new();
    for arg in args {
        let arg = arg.as_ref();
        if arg == "-" {
            inputs.push(Input::Stdin);
            continue;
        }
        let path = Path::new(arg);
        if path.is_dir() {
            let mut files = Vec::new();
            walk(path, &mut files)?;
            files.sort();
            if files.is_empty() {
                return Err(Error::NoInput(format!(
                    "the directory {arg} holds no files"
                )));
            }
            inputs.extend(files.into_iter().map(Input::File));
        } else if path.exists() {
            inputs.push(Input::File(path.to_owned()));
        } else if arg.contains(['*', '?', '[']) {
            let pattern = glob::glob(arg)
                .map_err(|e| Error::NoInput(format!("the pattern {arg:?} is invalid: {e}")))?;
            let mut files = Vec::new();
            for entry in pattern {
                let path = entry.map_err(|e| Error::Read {
                    input: e.path().display().to_string(),
                    source: io::Error::new(e.error().kind(), e.error().to_string()),
                })?;
                if path.is_file() {
                    files.push(path);
                }
            }
            files.sort();
            if files.is_empty() {
                return Err(Error::NoInput(format!(
                    "the pattern {arg:?} matches no file"
                )));
            }
            inputs.extend(files.into_iter().map(Input::File));
        } else {
            return Err(Error::NoInput(format!(
                "cannot open {arg}: no such file or directory"
            )));
        }
    }
    if inputs.is_empty() {
        return Err(Error::NoInput("no input given".into()));
    }
    Ok(inputs)
}

/// The inputs in a message: the one input's name, or how many there are.
pub fn describe(inputs: &[Input]) -> String {
    match inputs {
        [one] => one.name(),
        many => format!("{} inputs", many.len()),
    }
}

/// Every file under `dir`, skipping names that start with a dot.
fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let read_error = |source| Error::Read {
        input: dir.display().to_string(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            walk(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

/// A line without its `\n` or `\r\n` ending.
pub(crate) fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Up to N lines, stored back to back, with their end offsets: the unit of work of an import.
#[derive(Debug, Default)]
pub(crate) struct Chunk {
    pub(crate) data: Vec<u8>,
    ends: Vec<usize>,
}

impl Chunk {
    /// Reads up to `max` lines from `input` into a new chunk; `None` at the end.
    #[cfg(test)]
    pub(crate) fn read(input: &mut dyn BufRead, max: usize) -> io::Result<Option<Chunk>> {
        let mut chunk = Chunk::default();
        Ok(chunk.refill(input, max)?.then_some(chunk))
    }

    /// Reads up to `max` lines from `input` into this chunk's buffers (emptied first, their
    /// capacity kept: a reused chunk costs no new pages); `false` at the end of `input`.
    pub(crate) fn refill(&mut self, input: &mut dyn BufRead, max: usize) -> io::Result<bool> {
        self.data.clear();
        self.ends.clear();
        while self.ends.len() < max {
            if input.read_until(b'\n', &mut self.data)? == 0 {
                break;
            }
            self.ends.push(self.data.len());
        }
        Ok(!self.ends.is_empty())
    }

    /// How many lines.
    pub(crate) fn lines(&self) -> usize {
        self.ends.len()
    }

    /// The lines without their line endings.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(start, end)| trim_line_end(&self.data[start..end]))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "firehose-import-input-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn read_all(input: &Input) -> String {
        let mut text = String::new();
        input.open().unwrap().read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn gzip_and_zstd_are_read_as_the_plain_text() {
        let dir = temp_dir("codecs");
        let text = "line one\nline two\r\nline three";
        std::fs::write(dir.join("plain.jsonl"), text).unwrap();
        // Two gzip members back to back, as `cat a.gz b.gz` makes.
        let mut gz = Vec::new();
        for part in [&text[..9], &text[9..]] {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), Default::default());
            encoder.write_all(part.as_bytes()).unwrap();
            gz.extend(encoder.finish().unwrap());
        }
        std::fs::write(dir.join("data.gz"), gz).unwrap();
        // No telling extension: the magic bytes decide.
        std::fs::write(
            dir.join("data.bin"),
            zstd::encode_all(text.as_bytes(), 3).unwrap(),
        )
        .unwrap();
        for name in ["plain.jsonl", "data.gz", "data.bin"] {
            assert_eq!(read_all(&Input::File(dir.join(name))), text, "{name}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn directories_and_patterns_expand_in_a_stable_order() {
        let dir = temp_dir("expand");
        std::fs::create_dir_all(dir.join("b/deeper")).unwrap();
        for name in [
            "b/2.json",
            "a.json",
            "b/deeper/1.json",
            "b/.hidden",
            "c.txt",
        ] {
            std::fs::write(dir.join(name), "").unwrap();
        }
        let d = dir.display();
        let names = |args: &[String]| -> Vec<String> {
            expand(args)
                .unwrap()
                .iter()
                .map(|i| i.name().replace(&format!("{d}/"), ""))
                .collect()
        };
        assert_eq!(
            names(&[format!("{d}/b"), format!("{d}/a.json")]),
            ["b/2.json", "b/deeper/1.json", "a.json"]
        );
        assert_eq!(
            names(&[format!("{d}/**/*.json")]),
            ["a.json", "b/2.json", "b/deeper/1.json"]
        );
        assert_eq!(names(&["-".to_owned()]), ["-"]);
        for missing in [format!("{d}/nope.json"), format!("{d}/*.parquet")] {
            let err = expand(std::slice::from_ref(&missing)).unwrap_err();
            assert!(matches!(err, Error::NoInput(_)), "{missing}: {err}");
        }
        std::fs::create_dir_all(dir.join("empty")).unwrap();
        assert!(expand(&[format!("{d}/empty")]).is_err());
        assert!(expand::<&str>(&[]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn chunks_split_lines_and_trim_their_endings() {
        let mut input: &[u8] = b"a\r\nbb\n\nccc";
        let first = Chunk::read(&mut input, 2).unwrap().unwrap();
        assert_eq!(first.iter().collect::<Vec<_>>(), [&b"a"[..], b"bb"]);
        let second = Chunk::read(&mut input, 2).unwrap().unwrap();
        assert_eq!(second.iter().collect::<Vec<_>>(), [&b""[..], b"ccc"]);
        assert!(Chunk::read(&mut input, 2).unwrap().is_none());
    }
}
