//! Blob containers of import and export jobs: a directory on the hub's host (`file:///abs/dir`)
//! or an object-store container reached by URL (`http(s)://…`, a pre-signed or Azure SAS URL).
//!
//! * The URL of blob `name` in an `http(s)` container is the container URL with `/{name}`
//!   appended to its path, before any `?query` (so a SAS token applies to every blob). Blobs are
//!   read with `GET` and written with one `PUT` carrying `x-ms-blob-type: BlockBlob`.
//! * Output blobs are first written to a local temp file. For a directory container it sits
//!   beside the target and is fsynced and renamed into place on commit, so readers never see
//!   a partial blob; for a URL container it is staged in the hub's data directory and uploaded
//!   on commit.
//! * Input blobs are read as a stream of lines ([`BlobLines`]); a line longer than
//!   [`MAX_LINE_BYTES`] is reported and skipped rather than buffered.

use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use reqwest::Url;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

/// Longest input line read; longer lines are skipped and reported.
pub(crate) const MAX_LINE_BYTES: usize = 1024 * 1024;

/// How much is read from an input blob at a time, and the size of an output blob's buffer.
const IO_BLOCK: usize = 256 * 1024;

/// A blob container.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Container {
    /// A directory on the hub's host.
    Dir(PathBuf),
    /// An `http` or `https` container URL.
    Url(Url),
}

impl fmt::Debug for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Container::Dir(p) => write!(f, "Dir({})", p.display()),
            // The query may hold a signature.
            Container::Url(u) => write!(f, "Url({}://{}{})", u.scheme(), host(u), u.path()),
        }
    }
}

fn host(u: &Url) -> String {
    match (u.host_str(), u.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        (None, _) => String::new(),
    }
}

/// Why a blob could not be read or written. The text never holds a URL's query (signatures).
#[derive(Debug, thiserror::Error)]
pub(crate) enum BlobError {
    /// A local file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An HTTP request failed or was answered with an error status.
    #[error("{method} {url}: {reason}")]
    Http {
        /// `GET` or `PUT`.
        method: &'static str,
        /// The blob URL without its query.
        url: String,
        /// The status or transport error.
        reason: String,
    },
}

impl Container {
    /// Parses a container URI: `file:///abs/dir` (host empty or `localhost`) or an `http(s)`
    /// URL with a host.
    pub(crate) fn parse(uri: &str) -> Result<Container, String> {
        let url =
            Url::parse(uri).map_err(|e| format!("'{}' is not a valid URI: {e}", redact(uri)))?;
        match url.scheme() {
            "file" => {
                let path = url.to_file_path().map_err(|()| {
                    "a file container must be file:///absolute/directory (no host)".to_owned()
                })?;
                if !path.is_absolute() {
                    return Err("a file container must be an absolute directory".to_owned());
                }
                Ok(Container::Dir(path))
            }
            "http" | "https" => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err("a container URL needs a host".to_owned());
                }
                if url.cannot_be_a_base() {
                    return Err("a container URL needs a path".to_owned());
                }
                Ok(Container::Url(url))
            }
            other => Err(format!(
                "unsupported container scheme '{other}': use file:///dir or an http(s) container URL"
            )),
        }
    }

    /// Where blob `name` is, for messages (a URL without its query).
    pub(crate) fn describe(&self, name: &str) -> String {
        match self {
            Container::Dir(dir) => dir.join(name).display().to_string(),
            Container::Url(u) => {
                let mut u = blob_url(u, name);
                u.set_query(None);
                u.to_string()
            }
        }
    }
}

/// A URI for messages: everything before any `?`.
fn redact(uri: &str) -> &str {
    uri.split('?').next().unwrap_or_default()
}

/// Checks a blob name: not empty, no `..` or empty path segments, no leading `/` or `\`, no
/// control characters.
pub(crate) fn check_blob_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 1024 {
        return Err("a blob name has 1 to 1024 characters".to_owned());
    }
    if name.chars().any(|c| c.is_control() || c == '\\') {
        return Err(format!("the blob name '{name}' has a forbidden character"));
    }
    if name
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(format!(
            "the blob name '{name}' must not start with '/' or contain empty, '.' or '..' segments"
        ));
    }
    Ok(())
}

/// The URL of blob `name`: the container's path plus `/{name}`, query kept.
fn blob_url(container: &Url, name: &str) -> Url {
    let mut url = container.clone();
    if let Ok(mut segs) = url.path_segments_mut() {
        segs.pop_if_empty().extend(name.split('/'));
    }
    url
}

fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| format!("cannot create an HTTP client: {e}"))
}

fn http_error(method: &'static str, url: &Url, reason: impl fmt::Display) -> BlobError {
    let mut shown = url.clone();
    shown.set_query(None);
    BlobError::Http {
        method,
        url: shown.to_string(),
        reason: reason.to_string(),
    }
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BlobError {
    let path = path.display().to_string();
    move |source| BlobError::Io { what, path, source }
}

// === Reading ===

enum Source {
    File(tokio::fs::File),
    Http(reqwest::Response),
}

/// One line of an input blob.
pub(crate) enum Line {
    /// The line, without its terminator (`\n` or `\r\n`).
    Text(Vec<u8>),
    /// The line exceeded [`MAX_LINE_BYTES`] and was skipped.
    TooLong,
}

/// The lines of an input blob, read as a stream.
pub(crate) struct BlobLines {
    source: Source,
    what: String,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
    /// Discarding the rest of a line that is too long.
    skipping: bool,
    read: u64,
    total: Option<u64>,
    first: bool,
}

impl BlobLines {
    /// Opens blob `name` of `container` for reading.
    pub(crate) async fn open(container: &Container, name: &str) -> Result<BlobLines, BlobError> {
        let (source, total) = match container {
            Container::Dir(dir) => {
                let path = dir.join(name);
                let file = tokio::fs::File::open(&path)
                    .await
                    .map_err(io_error("opening", &path))?;
                let len = file
                    .metadata()
                    .await
                    .map_err(io_error("reading", &path))?
                    .len();
                (Source::File(file), Some(len))
            }
            Container::Url(base) => {
                let url = blob_url(base, name);
                let client = http_client().map_err(|e| http_error("GET", &url, e))?;
                let resp = client
                    .get(url.clone())
                    .send()
                    .await
                    .map_err(|e| http_error("GET", &url, e.without_url()))?;
                if !resp.status().is_success() {
                    return Err(http_error("GET", &url, format!("HTTP {}", resp.status())));
                }
                let total = resp.content_length();
                (Source::Http(resp), total)
            }
        };
        Ok(BlobLines {
            source,
            what: container.describe(name),
            buf: Vec::with_capacity(IO_BLOCK),
            pos: 0,
            eof: false,
            skipping: false,
            read: 0,
            total,
            first: true,
        })
    }

    /// Bytes read so far and the blob's size, when known.
    pub(crate) fn position(&self) -> (u64, Option<u64>) {
        (self.read, self.total)
    }

    /// The next line, or `None` at the end of the blob.
    pub(crate) async fn next_line(&mut self) -> Result<Option<Line>, BlobError> {
        loop {
            if let Some(i) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let start = self.pos;
                self.pos += i + 1;
                if self.skipping {
                    self.skipping = false;
                    return Ok(Some(Line::TooLong));
                }
                return Ok(Some(self.text(start, start + i)));
            }
            if self.eof {
                if self.skipping {
                    self.skipping = false;
                    self.pos = self.buf.len();
                    return Ok(Some(Line::TooLong));
                }
                if self.pos < self.buf.len() {
                    let start = self.pos;
                    self.pos = self.buf.len();
                    return Ok(Some(self.text(start, self.buf.len())));
                }
                return Ok(None);
            }
            self.buf.drain(..self.pos);
            self.pos = 0;
            if self.skipping || self.buf.len() > MAX_LINE_BYTES {
                self.skipping = true;
                self.buf.clear();
            }
            self.fill().await?;
        }
    }

    fn text(&mut self, start: usize, end: usize) -> Line {
        let mut line = &self.buf[start..end];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        if std::mem::take(&mut self.first)
            && let Some(rest) = line.strip_prefix(b"\xEF\xBB\xBF")
        {
            line = rest;
        }
        Line::Text(line.to_vec())
    }

    /// Reads the next block into the buffer, or notes the end of the blob.
    async fn fill(&mut self) -> Result<(), BlobError> {
        match &mut self.source {
            Source::File(file) => {
                let start = self.buf.len();
                self.buf.resize(start + IO_BLOCK, 0);
                let n =
                    file.read(&mut self.buf[start..])
                        .await
                        .map_err(|source| BlobError::Io {
                            what: "reading",
                            path: self.what.clone(),
                            source,
                        })?;
                self.buf.truncate(start + n);
                self.eof = n == 0;
                self.read += n as u64;
            }
            Source::Http(resp) => match resp.chunk().await {
                Ok(Some(chunk)) => {
                    self.buf.extend_from_slice(&chunk);
                    self.read += chunk.len() as u64;
                }
                Ok(None) => self.eof = true,
                Err(e) => {
                    return Err(BlobError::Http {
                        method: "GET",
                        url: self.what.clone(),
                        reason: e.without_url().to_string(),
                    });
                }
            },
        }
        Ok(())
    }
}

// === Writing ===

/// An output blob being written: a local temp file until [`BlobWriter::commit`].
pub(crate) struct BlobWriter {
    target: Target,
    tmp: PathBuf,
    file: Option<BufWriter<tokio::fs::File>>,
    len: u64,
}

enum Target {
    File(PathBuf),
    Url(Url),
}

impl BlobWriter {
    /// Starts blob `name` of `container`. `staging` holds the temp files of URL containers;
    /// `tag` makes the temp name unique (the job id).
    pub(crate) async fn create(
        container: &Container,
        name: &str,
        staging: &Path,
        tag: &str,
    ) -> Result<BlobWriter, BlobError> {
        let (target, tmp) = match container {
            Container::Dir(dir) => {
                let meta = tokio::fs::metadata(dir)
                    .await
                    .map_err(io_error("opening the container", dir))?;
                if !meta.is_dir() {
                    return Err(BlobError::Io {
                        what: "opening the container",
                        path: dir.display().to_string(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::NotADirectory,
                            "not a directory",
                        ),
                    });
                }
                let path = dir.join(name);
                let parent = path.parent().unwrap_or(dir).to_owned();
                tokio::fs::create_dir_all(&parent)
                    .await
                    .map_err(io_error("creating", &parent))?;
                let file_name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let tmp = parent.join(format!(".{file_name}.{tag}.tmp"));
                (Target::File(path), tmp)
            }
            Container::Url(base) => (
                Target::Url(blob_url(base, name)),
                staging.join(format!("{tag}.{}.tmp", name.replace('/', "_"))),
            ),
        };
        let mut opts = tokio::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        // Exports hold keys: owner-only.
        #[cfg(unix)]
        opts.mode(0o600);
        let file = opts.open(&tmp).await.map_err(io_error("creating", &tmp))?;
        Ok(BlobWriter {
            target,
            tmp,
            file: Some(BufWriter::with_capacity(IO_BLOCK, file)),
            len: 0,
        })
    }

    /// Appends `bytes`.
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.write_all(bytes)
            .await
            .map_err(io_error("writing", &self.tmp))?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Publishes the blob: fsync and rename into a directory container, or one `PUT` to a URL
    /// container. The temp file is removed either way.
    pub(crate) async fn commit(mut self) -> Result<(), BlobError> {
        let result = self.publish().await;
        if result.is_err() || matches!(self.target, Target::Url(_)) {
            let _ = tokio::fs::remove_file(&self.tmp).await;
        }
        result
    }

    async fn publish(&mut self) -> Result<(), BlobError> {
        let Some(mut file) = self.file.take() else {
            return Ok(());
        };
        file.flush().await.map_err(io_error("writing", &self.tmp))?;
        let file = file.into_inner();
        match &self.target {
            Target::File(path) => {
                file.sync_all()
                    .await
                    .map_err(io_error("syncing", &self.tmp))?;
                drop(file);
                tokio::fs::rename(&self.tmp, path)
                    .await
                    .map_err(io_error("renaming into", path))?;
                let dir = path.parent().map(Path::to_owned).unwrap_or_default();
                let synced = tokio::task::spawn_blocking({
                    let dir = dir.clone();
                    move || std::fs::File::open(&dir)?.sync_all()
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                synced.map_err(io_error("syncing", &dir))
            }
            Target::Url(url) => {
                drop(file);
                upload(url, &self.tmp, self.len).await
            }
        }
    }

    /// Drops the blob: removes the temp file.
    pub(crate) async fn abort(mut self) {
        self.file.take();
        let _ = tokio::fs::remove_file(&self.tmp).await;
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Neither committed nor aborted: the job was stopped mid-write.
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// `PUT`s the file at `path` (`len` bytes) to `url` as a block blob, streaming it.
async fn upload(url: &Url, path: &Path, len: u64) -> Result<(), BlobError> {
    let client = http_client().map_err(|e| http_error("PUT", url, e))?;
    let file = std::fs::File::open(path).map_err(io_error("reading", path))?;
    let body = reqwest::Body::wrap(FileBody::spawn(file, len));
    let resp = client
        .put(url.clone())
        .header("x-ms-blob-type", "BlockBlob")
        .header(reqwest::header::CONTENT_LENGTH, len)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .send()
        .await
        .map_err(|e| http_error("PUT", url, e.without_url()))?;
    if !resp.status().is_success() {
        return Err(http_error("PUT", url, format!("HTTP {}", resp.status())));
    }
    Ok(())
}

/// A request body streaming a local file, read on a blocking thread.
struct FileBody {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    len: u64,
}

impl FileBody {
    fn spawn(mut file: std::fs::File, len: u64) -> FileBody {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            loop {
                let mut block = vec![0u8; IO_BLOCK];
                let item = match file.read(&mut block) {
                    Ok(0) => return,
                    Ok(n) => {
                        block.truncate(n);
                        Ok(Bytes::from(block))
                    }
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                if tx.blocking_send(item).is_err() || failed {
                    return;
                }
            }
        });
        FileBody { rx, len }
    }
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_parse() {
        assert_eq!(
            Container::parse("file:///var/lib/x").expect("file"),
            Container::Dir(PathBuf::from("/var/lib/x"))
        );
        assert_eq!(
            Container::parse("file://localhost/var/a%20b").expect("localhost"),
            Container::Dir(PathBuf::from("/var/a b"))
        );
        assert!(Container::parse("file://elsewhere/x").is_err());
        assert!(Container::parse("ftp://h/x").is_err());
        assert!(Container::parse("/just/a/path").is_err());
        assert!(Container::parse("https://").is_err());
        let c = Container::parse("https://acct.blob.core.windows.net/c1?sv=1&sig=secret")
            .expect("https");
        assert_eq!(
            c.describe("devices.txt"),
            "https://acct.blob.core.windows.net/c1/devices.txt"
        );
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn blob_url_inserts_the_name_before_the_query() {
        let base = Url::parse("https://h/container?sv=1&sig=a%2Bb").expect("url");
        assert_eq!(
            blob_url(&base, "devices.txt").as_str(),
            "https://h/container/devices.txt?sv=1&sig=a%2Bb"
        );
        let base = Url::parse("http://h:9000/bucket/prefix/").expect("url");
        assert_eq!(
            blob_url(&base, "dir/a b.txt").as_str(),
            "http://h:9000/bucket/prefix/dir/a%20b.txt"
        );
    }

    #[test]
    fn blob_names() {
        assert!(check_blob_name("devices.txt").is_ok());
        assert!(check_blob_name("a/b.txt").is_ok());
        for bad in ["", "/abs", "a/../b", "..", "a//b", "a\\b", "a\nb"] {
            assert!(check_blob_name(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn lines_are_split_and_long_lines_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut text = b"\xEF\xBB\xBFone\r\ntwo\n\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + IO_BLOCK * 2));
        text.extend(b"\nthree");
        std::fs::write(dir.path().join("in.txt"), &text).expect("write");
        let c = Container::Dir(dir.path().to_owned());
        let mut lines = BlobLines::open(&c, "in.txt").await.expect("open");
        let mut got = Vec::new();
        while let Some(line) = lines.next_line().await.expect("line") {
            got.push(match line {
                Line::Text(t) => String::from_utf8(t).expect("utf8"),
                Line::TooLong => "<too long>".to_owned(),
            });
        }
        assert_eq!(got, ["one", "two", "", "<too long>", "three"]);
        assert_eq!(
            lines.position(),
            (text.len() as u64, Some(text.len() as u64))
        );
    }

    #[tokio::test]
    async fn writer_publishes_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Container::Dir(dir.path().to_owned());
        let mut w = BlobWriter::create(&c, "sub/out.txt", dir.path(), "job1")
            .await
            .expect("create");
        w.write(b"hello\n").await.expect("write");
        assert!(!dir.path().join("sub/out.txt").exists());
        w.commit().await.expect("commit");
        assert_eq!(
            std::fs::read(dir.path().join("sub/out.txt")).expect("read"),
            b"hello\n"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp file left: {names:?}");
    }
}
