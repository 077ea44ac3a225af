//! Creating files and directories that hold keys, tokens or data: files are
//! mode 0600 and directories 0700 whatever the process umask, and a file that
//! already exists is tightened to 0600 when it is opened for writing. Every
//! crate that writes such files goes through these helpers.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of private files.
pub const FILE_MODE: u32 = 0o600;
/// Mode of private directories.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` (and missing parents) with mode 0700. Directories that
/// already exist are left as they are (they may be shared, such as `/var/lib`).
pub fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    // Create the missing ancestors one by one so each gets 0700, even under
    // an odd umask (DirBuilder's mode is filtered by the umask).
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.as_os_str().is_empty() || d.is_dir() {
            break;
        }
        missing.push(d);
        cur = d.parent();
    }
    for d in missing.into_iter().rev() {
        match DirBuilder::new().mode(DIR_MODE).create(d) {
            Ok(()) => std::fs::set_permissions(d, Permissions::from_mode(DIR_MODE))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Creates the parent directory of `path` (0700) when it is missing.
pub fn ensure_parent_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => ensure_private_dir(dir),
        None => Ok(()),
    }
}

fn private_open(path: &Path, opts: &mut OpenOptions) -> std::io::Result<File> {
    ensure_parent_dir(path)?;
    let file = opts.mode(FILE_MODE).open(path)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Creates or truncates `path` for writing, mode 0600.
pub fn create(path: &Path) -> std::io::Result<File> {
    private_open(
        path,
        OpenOptions::new().write(true).create(true).truncate(true),
    )
}

/// Creates `path` for appending, mode 0600; fails when it exists.
pub fn create_new_append(path: &Path) -> std::io::Result<File> {
    private_open(path, OpenOptions::new().append(true).create_new(true))
}

/// Writes `bytes` to `path` (created or truncated, mode 0600) and fsyncs.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Makes `path` mode 0600 if it exists.
pub fn restrict(path: &Path) -> std::io::Result<()> {
    match std::fs::set_permissions(path, Permissions::from_mode(FILE_MODE)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Prepares a SQLite database file before SQLite opens it: its directory
/// (0700 when created), the file itself (created empty when missing) and its
/// `-wal` / `-shm` / `-journal` companions when present, all mode 0600.
/// SQLite creates its journal files with the database file's mode, so they
/// stay private too.
pub fn prepare_sqlite_file(path: &Path) -> std::io::Result<()> {
    private_open(path, OpenOptions::new().write(true).create(true))?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        restrict(Path::new(&name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_are_0600_and_dirs_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        let file = dir.join("secret");
        write(&file, b"x").unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        // An existing, too open file is tightened.
        std::fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        write(&file, b"y").unwrap();
        assert_eq!(mode(&file), 0o600);
        let db = tmp.path().join("c/x.db");
        prepare_sqlite_file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        let wal = tmp.path().join("c/x.db-wal");
        std::fs::write(&wal, b"").unwrap();
        std::fs::set_permissions(&wal, Permissions::from_mode(0o644)).unwrap();
        prepare_sqlite_file(&db).unwrap();
        assert_eq!(mode(&wal), 0o600);
        let f = tmp.path().join("c/seg");
        create_new_append(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        assert!(create_new_append(&f).is_err());
    }
}
