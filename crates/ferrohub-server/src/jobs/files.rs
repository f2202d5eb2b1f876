//! `file://` containers: directories inside the one folder the hub lets jobs use, the file root
//! (`[jobs] file_root`, by default `<data_dir>/job-files`).
//!
//! A job is started by a REST caller, so a `file://` container is untrusted input naming a
//! path on the hub's host. Left alone it could overwrite any file the hub may write (an export
//! holds every device key) or read any file it may read (an import). The rules:
//!
//! * the container must be the root or a directory below it, named by its absolute path
//!   (`file:///<root>/exports`); `..` segments are refused before anything is resolved;
//! * every directory below the root, and the blob itself, is opened relative to the directory
//!   before it (`openat`) with `O_NOFOLLOW`: a symbolic link anywhere below the root is refused
//!   rather than followed, and since each step holds the directory it came from, renaming or
//!   swapping a directory between the check and the use cannot lead outside (no
//!   time-of-check/time-of-use gap);
//! * an input blob must be a regular file (not a FIFO or a device that would never end);
//! * an output blob is written to a new temporary file (`O_EXCL`) and published with
//!   `renameat2(RENAME_NOREPLACE)` (or `linkat` where that is not supported): a job only ever
//!   creates files; it never replaces one, whoever made it. Directories named by a blob name
//!   (`dir/devices.txt`) are created inside the container, as blob stores show them.
//!
//! The root itself is trusted: it comes from the configuration. It may not overlap the data
//! directory (other than being the default folder inside it), so a job never touches the hub's
//! own state.

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};

use crate::fsutil::create_dir_durably;

/// The folder in the data directory that is the file root when none is configured.
pub(crate) const DEFAULT_DIR_NAME: &str = "job-files";

/// Flags every directory along a container's path is opened with.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// The directory `file://` containers must lie in.
#[derive(Debug, Clone)]
pub(crate) struct FileRoot {
    /// As configured (absolute): how callers name it.
    path: PathBuf,
    /// With symbolic links resolved: the same directory as the kernel names it.
    canonical: PathBuf,
}

/// Why a root could not be prepared.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RootError {
    /// The directory could not be created or resolved.
    #[error("the job file root {path}: {source}")]
    Io {
        /// The root.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The configured root overlaps the hub's data directory.
    #[error(
        "the job file root {root} overlaps the data directory {data}; jobs must not reach the hub's own state"
    )]
    OverlapsDataDir {
        /// The root, resolved.
        root: PathBuf,
        /// The data directory, resolved.
        data: PathBuf,
    },
}

impl FileRoot {
    /// Creates (if needed) and resolves the root: `configured`, or `<data_dir>/job-files`.
    pub(crate) fn prepare(
        data_dir: &Path,
        configured: Option<&Path>,
    ) -> Result<FileRoot, RootError> {
        let default = data_dir.join(DEFAULT_DIR_NAME);
        let path = configured.map_or_else(|| default.clone(), Path::to_owned);
        let io_err = |source| RootError::Io {
            path: path.clone(),
            source,
        };
        create_dir_durably(&path).map_err(io_err)?;
        let canonical = path.canonicalize().map_err(io_err)?;
        let data = data_dir.canonicalize().map_err(io_err)?;
        let is_default = default.canonicalize().is_ok_and(|d| d == canonical);
        let overlaps = canonical.starts_with(&data) || data.starts_with(&canonical);
        if overlaps && !is_default {
            return Err(RootError::OverlapsDataDir {
                root: canonical,
                data,
            });
        }
        // As callers name it: absolute, without `.` segments.
        let path = std::path::absolute(&path).map_err(io_err)?;
        Ok(FileRoot { path, canonical })
    }

    /// A root at `path` taken as it is, touching nothing on disk: for checks of
    /// [`FileRoot::relative`] alone (the fuzz targets).
    pub(crate) fn unchecked(path: &Path) -> FileRoot {
        FileRoot {
            path: path.to_owned(),
            canonical: path.to_owned(),
        }
    }

    /// The root as configured.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `dir` relative to the root, checked by its text alone: absolute, no `..` or `.`
    /// segments, and inside the root (as configured or as resolved).
    pub(crate) fn relative(&self, dir: &Path) -> Result<PathBuf, String> {
        let clean = dir.is_absolute()
            && dir
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        if !clean {
            return Err(format!(
                "{} must be an absolute directory without '.' or '..' segments",
                dir.display()
            ));
        }
        dir.strip_prefix(&self.path)
            .or_else(|_| dir.strip_prefix(&self.canonical))
            .map(Path::to_owned)
            .map_err(|_| {
                format!(
                    "{} is outside the job file root {} (configured as [jobs] file_root)",
                    dir.display(),
                    self.path.display()
                )
            })
    }

    /// Opens the directory `rel` below the root without following links. With
    /// `create_missing`, missing directories are created (mode 0700) on the way.
    fn open_dir(&self, rel: &Path, create_missing: bool) -> io::Result<OwnedFd> {
        let mut dir = rustix::fs::open(&self.canonical, DIR_FLAGS, Mode::empty())?;
        for component in rel.components() {
            let Component::Normal(name) = component else {
                return Err(invalid("the path has a segment that is not a plain name"));
            };
            if create_missing {
                match rustix::fs::mkdirat(&dir, name, Mode::RWXU) {
                    Ok(()) => rustix::fs::fsync(&dir)?,
                    Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            dir = rustix::fs::openat(&dir, name, DIR_FLAGS, Mode::empty()).map_err(refuse_links)?;
        }
        Ok(dir)
    }

    /// Checks that container `rel` exists as a directory reachable without links.
    pub(crate) fn check_container(&self, rel: &Path) -> io::Result<()> {
        self.open_dir(rel, false).map(drop)
    }

    /// Checks that blob `name` does not exist yet in container `rel` (a job never replaces a
    /// file). A missing directory on the way means the blob does not exist.
    pub(crate) fn check_new_blob(&self, rel: &Path, name: &str) -> io::Result<()> {
        let (dirs, leaf) = split_blob(name)?;
        let dir = match self.open_dir(&rel.join(dirs), false) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        match rustix::fs::statat(&dir, leaf, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the blob already exists; jobs never replace files",
            )),
            Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens input blob `name` of container `rel` for reading: a regular file, reached without
    /// following any link.
    pub(crate) fn open_blob(&self, rel: &Path, name: &str) -> io::Result<std::fs::File> {
        let (dirs, leaf) = split_blob(name)?;
        let dir = self.open_dir(&rel.join(dirs), false)?;
        // Non-blocking, so opening a FIFO does not wait for a writer; it is refused below.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = rustix::fs::openat(&dir, leaf, flags, Mode::empty()).map_err(refuse_links)?;
        let stat = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(invalid("the blob is not a regular file"));
        }
        // Regular files ignore O_NONBLOCK; clear it anyway so reads behave as usual.
        rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
        Ok(std::fs::File::from(fd))
    }

    /// Starts output blob `name` of container `rel`: creates its directories and a new
    /// temporary file `.{leaf}.{tag}.tmp` (owner-only: exports hold keys) beside it.
    pub(crate) fn create_blob(&self, rel: &Path, name: &str, tag: &str) -> io::Result<NewBlob> {
        // The container itself must exist, like a blob store's container.
        drop(self.open_dir(rel, false)?);
        let (dirs, leaf) = split_blob(name)?;
        let dir = self.open_dir(&rel.join(dirs), true)?;
        let tmp = format!(".{}.{tag}.tmp", leaf.to_string_lossy());
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&dir, tmp.as_str(), flags, Mode::RUSR | Mode::WUSR)?;
        Ok(NewBlob {
            dir,
            tmp,
            leaf: leaf.to_owned(),
            file: Some(std::fs::File::from(fd)),
        })
    }
}

/// An output blob being written in a directory container: a temporary file until
/// [`NewBlob::publish`]. Dropped unpublished, the temporary file is removed.
#[derive(Debug)]
pub(crate) struct NewBlob {
    dir: OwnedFd,
    tmp: String,
    leaf: std::ffi::OsString,
    file: Option<std::fs::File>,
}

impl NewBlob {
    /// The temporary file, to write to (taken once).
    pub(crate) fn take_file(&mut self) -> Option<std::fs::File> {
        self.file.take()
    }

    /// Gives the blob its name, durably, unless that name exists: `file` (the temporary file,
    /// written) is synced, renamed without replacing, and the directory synced.
    pub(crate) fn publish(mut self, file: std::fs::File) -> io::Result<()> {
        file.sync_all()?;
        drop(file);
        let renamed = rustix::fs::renameat_with(
            &self.dir,
            self.tmp.as_str(),
            &self.dir,
            self.leaf.as_os_str(),
            RenameFlags::NOREPLACE,
        );
        match renamed {
            Ok(()) => {}
            // File systems without RENAME_NOREPLACE: a hard link fails on an existing name too.
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
                rustix::fs::linkat(
                    &self.dir,
                    self.tmp.as_str(),
                    &self.dir,
                    self.leaf.as_os_str(),
                    AtFlags::empty(),
                )
                .map_err(exists_message)?;
                rustix::fs::unlinkat(&self.dir, self.tmp.as_str(), AtFlags::empty())?;
            }
            Err(e) => return Err(exists_message(e)),
        }
        self.tmp.clear();
        rustix::fs::fsync(&self.dir)?;
        Ok(())
    }
}

impl Drop for NewBlob {
    fn drop(&mut self) {
        if !self.tmp.is_empty() {
            let _ = rustix::fs::unlinkat(&self.dir, self.tmp.as_str(), AtFlags::empty());
        }
    }
}

/// Splits a checked blob name (see [`super::blob::check_blob_name`]) into its directories and
/// its file name.
fn split_blob(name: &str) -> io::Result<(&Path, &OsStr)> {
    let path = Path::new(name);
    let leaf = path
        .file_name()
        .filter(|_| path.components().all(|c| matches!(c, Component::Normal(_))))
        .ok_or_else(|| invalid("the blob name is not a relative file name"))?;
    Ok((path.parent().unwrap_or(Path::new("")), leaf))
}

fn invalid(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// `ELOOP` (or `ENOTDIR` for a link where a directory was wanted) as a clear refusal.
fn refuse_links(e: rustix::io::Errno) -> io::Error {
    match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => io::Error::new(
            io::ErrorKind::InvalidInput,
            "a symbolic link or a non-directory is in the way; jobs do not follow links",
        ),
        other => other.into(),
    }
}

fn exists_message(e: rustix::io::Errno) -> io::Error {
    if e == rustix::io::Errno::EXIST {
        io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the blob already exists; jobs never replace files",
        )
    } else {
        e.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn root() -> (tempfile::TempDir, FileRoot) {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data");
        let root = FileRoot::prepare(&data, None).expect("root");
        (dir, root)
    }

    #[test]
    fn paths_outside_or_unclean_are_refused() {
        let (_dir, root) = root();
        assert_eq!(
            root.relative(&root.path().join("a/b")).expect("inside"),
            Path::new("a/b")
        );
        assert_eq!(root.relative(root.path()).expect("root"), Path::new(""));
        assert!(root.relative(Path::new("/etc")).is_err());
        assert!(root.relative(&root.path().join("a/../../x")).is_err());
        assert!(root.relative(Path::new("relative")).is_err());
        let sibling = PathBuf::from(format!("{}-other", root.path().display()));
        assert!(root.relative(&sibling).is_err(), "a prefix is not a parent");
    }

    #[test]
    fn links_are_never_followed() {
        let (dir, root) = root();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).expect("outside");
        std::fs::write(outside.join("secret"), b"s").expect("secret");
        std::os::unix::fs::symlink(&outside, root.path().join("link")).expect("dir link");
        std::fs::create_dir(root.path().join("c")).expect("c");
        std::os::unix::fs::symlink(outside.join("secret"), root.path().join("c/blob"))
            .expect("file link");

        assert!(root.check_container(Path::new("link")).is_err());
        assert!(root.open_blob(Path::new("link"), "secret").is_err());
        assert!(root.open_blob(Path::new("c"), "blob").is_err());
        assert!(root.create_blob(Path::new("link"), "x", "t").is_err());
        assert!(
            root.check_new_blob(Path::new("c"), "blob").is_err(),
            "a link exists"
        );
        assert!(!outside.join("x").exists());
    }

    #[test]
    fn blobs_are_created_never_replaced() {
        let (_dir, root) = root();
        std::fs::create_dir(root.path().join("c")).expect("c");
        let c = Path::new("c");
        root.check_new_blob(c, "sub/out.txt").expect("new");
        let mut blob = root.create_blob(c, "sub/out.txt", "job1").expect("create");
        let mut file = blob.take_file().expect("file");
        file.write_all(b"hello\n").expect("write");
        assert!(!root.path().join("c/sub/out.txt").exists());
        blob.publish(file).expect("publish");
        assert_eq!(
            std::fs::read(root.path().join("c/sub/out.txt")).expect("read"),
            b"hello\n"
        );
        assert!(root.check_new_blob(c, "sub/out.txt").is_err());

        let mut again = root.create_blob(c, "sub/out.txt", "job2").expect("create");
        let file = again.take_file().expect("file");
        let err = again.publish(file).expect_err("exists");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            std::fs::read(root.path().join("c/sub/out.txt")).expect("read"),
            b"hello\n",
            "the first blob is intact"
        );
        let names: Vec<_> = std::fs::read_dir(root.path().join("c/sub"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
        assert!(
            root.create_blob(Path::new("missing"), "x", "t").is_err(),
            "containers are not created"
        );
    }

    #[test]
    fn a_configured_root_must_not_overlap_the_data_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data");
        for bad in [data.clone(), data.join("eventlog"), dir.path().to_owned()] {
            assert!(
                matches!(
                    FileRoot::prepare(&data, Some(&bad)),
                    Err(RootError::OverlapsDataDir { .. })
                ),
                "{}",
                bad.display()
            );
        }
        FileRoot::prepare(&data, Some(&data.join(DEFAULT_DIR_NAME))).expect("the default");
        FileRoot::prepare(&data, Some(&dir.path().join("jobs"))).expect("beside");
    }
}
