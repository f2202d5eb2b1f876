//! Blob containers of import and export jobs: a directory inside the job file root on the hub's
//! host (`file:///abs/dir`, see [`super::files`]) or an object-store container reached by URL
//! (`http(s)://…`, a pre-signed or Azure SAS URL).
//!
//! * The URL of blob `name` in an `http(s)` container is the container URL with `/{name}`
//!   appended to its path, before any `?query` (so a SAS token applies to every blob). Blobs are
//!   read with `GET` and written with one `PUT` carrying `x-ms-blob-type: BlockBlob`.
//! * Output blobs are first written to a local temp file. For a directory container it sits
//!   beside the target and is fsynced and renamed into place on commit (never over an existing
//!   file), so readers never see a partial blob; for a URL container it is staged in the hub's
//!   data directory and uploaded on commit.
//! * Input blobs are read as a stream of lines ([`BlobLines`]); a line longer than
//!   [`MAX_LINE_BYTES`] is reported and skipped rather than buffered.
//!
//! # Reaching `http(s)` containers
//!
//! The URL comes from a REST caller, so the hub must not become a way to probe or reach what
//! only it can reach ([`HttpRules`]):
//!
//! * the host is resolved once, each address checked, and the connection made to the checked
//!   address (no second resolution that could answer differently); unless
//!   `[jobs] allow_private_addresses` is set, loopback, private, link-local, shared, multicast and
//!   other non-public addresses are refused ([`is_public`]);
//! * redirects are followed only to the same scheme, host and port (at most five), and proxies
//!   from the environment are not used (they would connect to an address the hub did not check);
//! * connecting may take [`CONNECT_TIMEOUT`], and every read [`READ_TIMEOUT`]; an input blob is
//!   read up to `[jobs] max_input_blob_bytes`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use reqwest::Url;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

use super::files::{FileRoot, NewBlob};

/// Longest input line read; longer lines are skipped and reported.
pub(crate) const MAX_LINE_BYTES: usize = 1024 * 1024;

/// How much is read from an input blob at a time, and the size of an output blob's buffer.
const IO_BLOCK: usize = 256 * 1024;

/// Longest a blob store may take to accept a connection.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a blob store may stay silent while the hub reads its answer.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Most redirects followed (same scheme, host and port only).
const MAX_REDIRECTS: usize = 5;

/// How jobs reach their containers: the file root for `file://` ones, the rules for `http(s)`
/// ones, and where URL-bound output is staged.
#[derive(Debug)]
pub(crate) struct Stores {
    /// The only directory `file://` containers may be in.
    pub(crate) root: FileRoot,
    /// The rules for `http(s)` containers.
    pub(crate) http: HttpRules,
    /// Where blobs bound for `http(s)` containers are staged before their upload.
    pub(crate) staging: PathBuf,
}

/// What the hub allows itself when it fetches or uploads a job's blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HttpRules {
    /// Whether a container may resolve to a non-public address (see [`is_public`]).
    pub(crate) allow_private: bool,
    /// Most bytes read from an input blob.
    pub(crate) max_download: u64,
}

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
    /// A `file://` container or blob is not inside the job file root.
    #[error("{0}")]
    Outside(String),
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
        // A fragment is never sent to a store, and text after `#` would be shown in messages
        // where a query (a signature) never is: no container has one.
        if url.fragment().is_some() {
            return Err("a container URI must not have a '#' fragment".to_owned());
        }
        match url.scheme() {
            "file" => {
                if url.query().is_some() {
                    return Err("a file container must not have a '?' query".to_owned());
                }
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
                u.set_fragment(None);
                u.to_string()
            }
        }
    }
}

/// A URI for messages: everything before any `?` or `#`.
fn redact(uri: &str) -> &str {
    uri.split(['?', '#']).next().unwrap_or_default()
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

/// A client for requests to `url`'s host under `rules`: the host resolved once and checked,
/// connections made to the checked address only, same-origin redirects, timeouts, no proxy.
async fn http_client(url: &Url, rules: HttpRules) -> Result<reqwest::Client, String> {
    let port = url
        .port_or_known_default()
        .ok_or_else(|| "the container URL has no port".to_owned())?;
    let host = url
        .host_str()
        .ok_or_else(|| "the container URL has no host".to_owned())?;
    // IPv6 literals come bracketed.
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let (domain, candidates): (Option<&str>, Vec<IpAddr>) = match literal.parse::<IpAddr>() {
        Ok(ip) => (None, vec![ip]),
        Err(_) => {
            let addrs = tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| format!("resolving {host}: {e}"))?;
            (Some(host), addrs.map(|a| a.ip()).collect())
        }
    };
    let chosen = candidates
        .iter()
        .copied()
        .find(|ip| rules.allow_private || is_public(*ip))
        .ok_or_else(|| {
            if candidates.is_empty() {
                "the host resolves to no address".to_owned()
            } else {
                format!(
                    "the host resolves only to addresses the hub may not reach ({}); \
                     [jobs] allow_private_addresses allows them",
                    candidates
                        .iter()
                        .map(IpAddr::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        })?;
    let origin = (
        url.scheme().to_owned(),
        url.host_str().map(str::to_owned),
        port,
    );
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        let next = attempt.url();
        let same = next.scheme() == origin.0
            && next.host_str().map(str::to_owned) == origin.1
            && next.port_or_known_default() == Some(origin.2);
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if same {
            attempt.follow()
        } else {
            attempt.stop()
        }
    });
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .redirect(policy)
        .no_proxy();
    if let Some(domain) = domain {
        builder = builder.resolve(domain, SocketAddr::new(chosen, port));
    }
    builder
        .build()
        .map_err(|e| format!("cannot create an HTTP client: {e}"))
}

/// Whether `ip` is an address on the public internet: not loopback, private (RFC 1918, unique
/// local), link-local (cloud metadata services live there), shared (carrier-grade NAT),
/// unspecified, broadcast, multicast, documentation, benchmarking or reserved. IPv4 addresses
/// inside IPv6 (mapped, NAT64) are judged as IPv4.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return is_public_v4(Ipv4Addr::new(a, b, c, d));
            }
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || v6 == Ipv6Addr::from([0u16, 0, 0, 0, 0, 0, 0, 1])
                || s[..5] == [0, 0, 0, 0, 0]) // IPv4-compatible and other reserved low addresses
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier-grade NAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn too_large(max: u64) -> String {
    format!("the blob is larger than [jobs] max_input_blob_bytes ({max} bytes)")
}

fn http_error(method: &'static str, url: &Url, reason: impl fmt::Display) -> BlobError {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
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
    /// Most bytes read from an `http(s)` blob.
    max_download: u64,
}

impl BlobLines {
    /// Opens blob `name` of `container` for reading.
    pub(crate) async fn open(
        stores: &Stores,
        container: &Container,
        name: &str,
    ) -> Result<BlobLines, BlobError> {
        let (source, total) = match container {
            Container::Dir(dir) => {
                let path = dir.join(name);
                let rel = stores.root.relative(dir).map_err(BlobError::Outside)?;
                let root = stores.root.clone();
                let name = name.to_owned();
                let file = tokio::task::spawn_blocking(move || root.open_blob(&rel, &name))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                    .map_err(io_error("opening", &path))?;
                let file = tokio::fs::File::from_std(file);
                let len = file
                    .metadata()
                    .await
                    .map_err(io_error("reading", &path))?
                    .len();
                (Source::File(file), Some(len))
            }
            Container::Url(base) => {
                let url = blob_url(base, name);
                let client = http_client(&url, stores.http)
                    .await
                    .map_err(|e| http_error("GET", &url, e))?;
                let resp = client
                    .get(url.clone())
                    .send()
                    .await
                    .map_err(|e| http_error("GET", &url, e.without_url()))?;
                if !resp.status().is_success() {
                    return Err(http_error("GET", &url, format!("HTTP {}", resp.status())));
                }
                let total = resp.content_length();
                if let Some(len) = total
                    && len > stores.http.max_download
                {
                    return Err(http_error("GET", &url, too_large(stores.http.max_download)));
                }
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
            max_download: stores.http.max_download,
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
                    self.read += chunk.len() as u64;
                    if self.read > self.max_download {
                        return Err(BlobError::Http {
                            method: "GET",
                            url: self.what.clone(),
                            reason: too_large(self.max_download),
                        });
                    }
                    self.buf.extend_from_slice(&chunk);
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
    /// Taken when the blob is committed.
    target: Option<Target>,
    file: Option<BufWriter<tokio::fs::File>>,
    len: u64,
    /// The blob, for messages.
    what: String,
}

enum Target {
    /// A new file in a directory container, published without replacing anything.
    Dir(NewBlob),
    /// A URL container: the staged temp file and where it goes.
    Url { url: Url, tmp: PathBuf },
}

impl BlobWriter {
    /// Starts blob `name` of `container`; `tag` makes the temp name unique (the job id).
    pub(crate) async fn create(
        stores: &Stores,
        container: &Container,
        name: &str,
        tag: &str,
    ) -> Result<BlobWriter, BlobError> {
        let what = container.describe(name);
        let (target, file) = match container {
            Container::Dir(dir) => {
                let rel = stores.root.relative(dir).map_err(BlobError::Outside)?;
                let root = stores.root.clone();
                let (name, tag) = (name.to_owned(), tag.to_owned());
                let mut blob =
                    tokio::task::spawn_blocking(move || root.create_blob(&rel, &name, &tag))
                        .await
                        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                        .map_err(io_error("creating", Path::new(&what)))?;
                let file = blob.take_file().ok_or_else(|| BlobError::Io {
                    what: "creating",
                    path: what.clone(),
                    source: std::io::Error::other("the blob's file was already taken"),
                })?;
                (Target::Dir(blob), tokio::fs::File::from_std(file))
            }
            Container::Url(base) => {
                let tmp = stores
                    .staging
                    .join(format!("{tag}.{}.tmp", name.replace('/', "_")));
                let mut opts = tokio::fs::OpenOptions::new();
                opts.write(true).create(true).truncate(true);
                // Exports hold keys: owner-only.
                #[cfg(unix)]
                opts.mode(0o600);
                let file = opts.open(&tmp).await.map_err(io_error("creating", &tmp))?;
                let url = blob_url(base, name);
                (Target::Url { url, tmp }, file)
            }
        };
        Ok(BlobWriter {
            target: Some(target),
            file: Some(BufWriter::with_capacity(IO_BLOCK, file)),
            len: 0,
            what,
        })
    }

    /// Appends `bytes`.
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let what = &self.what;
        file.write_all(bytes)
            .await
            .map_err(|source| BlobError::Io {
                what: "writing",
                path: what.clone(),
                source,
            })?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Publishes the blob: fsync and rename into a directory container (never over an existing
    /// file), or one `PUT` to a URL container. The temp file is removed either way.
    pub(crate) async fn commit(mut self, stores: &Stores) -> Result<(), BlobError> {
        let Some(mut file) = self.file.take() else {
            return Ok(());
        };
        let what = self.what.clone();
        let io = |what_doing: &'static str| {
            let path = what.clone();
            move |source| BlobError::Io {
                what: what_doing,
                path,
                source,
            }
        };
        file.flush().await.map_err(io("writing"))?;
        let file = file.into_inner().into_std().await;
        let Some(target) = self.target.take() else {
            return Ok(());
        };
        match target {
            Target::Dir(blob) => tokio::task::spawn_blocking(move || blob.publish(file))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                .map_err(io("publishing")),
            Target::Url { url, tmp } => {
                drop(file);
                let result = upload(&url, &tmp, self.len, stores.http).await;
                let _ = tokio::fs::remove_file(&tmp).await;
                result
            }
        }
    }

    /// Drops the blob: removes the temp file.
    pub(crate) async fn abort(mut self) {
        self.file.take();
        if let Some(Target::Url { tmp, .. }) = &self.target {
            let _ = tokio::fs::remove_file(tmp).await;
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Neither committed nor aborted: the job was stopped mid-write. A directory blob's
        // temp file goes with its `NewBlob`.
        if self.file.take().is_some()
            && let Some(Target::Url { tmp, .. }) = &self.target
        {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// `PUT`s the file at `path` (`len` bytes) to `url` as a block blob, streaming it.
async fn upload(url: &Url, path: &Path, len: u64, rules: HttpRules) -> Result<(), BlobError> {
    let client = http_client(url, rules)
        .await
        .map_err(|e| http_error("PUT", url, e))?;
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
        assert!(Container::parse("file:///srv/jobs/x?y=1").is_err());
    }

    /// Found by the `job_container` fuzz target: a `#` in the host made the rest, query
    /// included, a fragment that messages showed.
    #[test]
    fn fragments_are_refused_and_never_shown() {
        let uri = "https://acct.blob.#ore`job.windows.net/c1?sv=2021&sig%2Bb";
        let err = Container::parse(uri).expect_err("fragment");
        assert!(!err.contains("sig"), "{err}");
        assert!(Container::parse("https://h/c?sig=s#x").is_err());
        assert!(Container::parse("file:///srv/jobs/x#y").is_err());
        let bad = Container::parse("https://h/c%ZZ?sig=secret").map(|c| c.describe("x"));
        assert!(!format!("{bad:?}").contains("secret"));
        assert_eq!(redact("https://h/c#frag?sig=s"), "https://h/c");
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

    /// Stores with a file root in a temp dir, and a container `c` in it.
    fn stores(dir: &Path) -> (Stores, PathBuf) {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("data");
        let root = FileRoot::prepare(&data, None).expect("root");
        let container = root.path().join("c");
        std::fs::create_dir_all(&container).expect("container");
        let stores = Stores {
            root,
            http: HttpRules {
                allow_private: false,
                max_download: 1 << 20,
            },
            staging: dir.to_owned(),
        };
        (stores, container)
    }

    #[tokio::test]
    async fn lines_are_split_and_long_lines_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (stores, container) = stores(dir.path());
        let mut text = b"\xEF\xBB\xBFone\r\ntwo\n\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + IO_BLOCK * 2));
        text.extend(b"\nthree");
        std::fs::write(container.join("in.txt"), &text).expect("write");
        let c = Container::Dir(container);
        let mut lines = BlobLines::open(&stores, &c, "in.txt").await.expect("open");
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
    async fn writer_publishes_atomically_and_never_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (stores, container) = stores(dir.path());
        let c = Container::Dir(container.clone());
        let mut w = BlobWriter::create(&stores, &c, "sub/out.txt", "job1")
            .await
            .expect("create");
        w.write(b"hello\n").await.expect("write");
        assert!(!container.join("sub/out.txt").exists());
        w.commit(&stores).await.expect("commit");
        assert_eq!(
            std::fs::read(container.join("sub/out.txt")).expect("read"),
            b"hello\n"
        );
        let names: Vec<_> = std::fs::read_dir(container.join("sub"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp file left: {names:?}");

        let mut w = BlobWriter::create(&stores, &c, "sub/out.txt", "job2")
            .await
            .expect("create");
        w.write(b"other\n").await.expect("write");
        assert!(w.commit(&stores).await.is_err(), "an existing blob stays");
        assert_eq!(
            std::fs::read(container.join("sub/out.txt")).expect("read"),
            b"hello\n"
        );

        let outside = Container::Dir(dir.path().to_owned());
        assert!(matches!(
            BlobWriter::create(&stores, &outside, "x", "job3").await,
            Err(BlobError::Outside(_))
        ));
        assert!(matches!(
            BlobLines::open(&stores, &outside, "x").await,
            Err(BlobError::Outside(_))
        ));
    }

    #[test]
    fn public_addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().expect("ip")), "{private}");
        }
        for public in ["8.8.8.8", "20.60.1.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().expect("ip")), "{public}");
        }
    }

    #[tokio::test]
    async fn private_hosts_are_refused_before_connecting() {
        let rules = HttpRules {
            allow_private: false,
            max_download: 1 << 20,
        };
        for url in [
            "http://127.0.0.1:9/c",
            "http://[::1]:9/c",
            "http://localhost:9/c",
            "http://169.254.169.254/latest",
        ] {
            let url = Url::parse(url).expect("url");
            let err = http_client(&url, rules).await.expect_err("private");
            assert!(err.contains("allow_private_addresses"), "{url}: {err}");
        }
        let allowed = HttpRules {
            allow_private: true,
            ..rules
        };
        http_client(&Url::parse("http://127.0.0.1:9/c").expect("url"), allowed)
            .await
            .expect("allowed when configured");
    }
}
