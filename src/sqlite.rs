//! Which migrations an SQLite database records as applied, read by the launcher itself in
//! milliseconds, without starting Django.
//!
//! The file belongs to the service user, so root treats it as untrusted input: it is
//! opened once without following a link and without blocking (a FIFO or device swapped in
//! is refused, never waited on), checked through that descriptor to be a plain file with
//! one name, and SQLite reads that very file through /proc/self/fd; it is opened read-only (no journal, WAL or shm file is ever created, so nothing root-owned is
//! left beside the database), in SQLite's defensive mode with schema code distrusted and
//! cell sizes checked, no memory mapping, and every row bounded. Anything unusual (a
//! write-ahead log or a hot journal beside it, a locked or damaged file) is "cannot tell",
//! which makes migrate run: when unsure, do the work.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

/// More rows than any app has migrations: a bound, not a limit anyone meets.
const MAX_ROWS: usize = 100_000;
/// Longest app label or migration name taken as such.
const MAX_NAME: usize = 255;

/// The set of "app.name" in `django_migrations`; an empty set when the table does not
/// exist (a new or emptied database). Err(why) when the answer would not be exact.
pub fn applied_migrations(db: &Path) -> Result<BTreeSet<String>, String> {
    for side in ["-wal", "-journal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(side);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.len() > 0) {
            return Err(format!(
                "{} is present, so the database may hold changes a read-only reader cannot see",
                Path::new(&p).display()
            ));
        }
    }
    read(db).map_err(|e| format!("{} {e}", db.display()))
}

/// The database file, opened and checked once: never a link, a FIFO or a device, never a
/// file with a second name.
fn open_checked(db: &Path) -> Result<std::os::fd::OwnedFd, String> {
    use nix::fcntl::{OFlag, open};
    use nix::sys::stat::{Mode, SFlag, fstat};
    let fd = open(
        db,
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| match e {
        nix::errno::Errno::ELOOP => "is a symbolic link".to_string(),
        e => format!("cannot be opened: {e}"),
    })?;
    let st = fstat(&fd).map_err(|e| format!("cannot be examined: {e}"))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err("is not a regular file".into());
    }
    if st.st_nlink != 1 {
        return Err(format!("has {} names (hard links)", st.st_nlink));
    }
    Ok(fd)
}

fn read(db: &Path) -> Result<BTreeSet<String>, String> {
    let fd = open_checked(db)?;
    // SQLite opens the checked file itself, whatever the path names by now.
    let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    query(Path::new(&path)).map_err(|e| e.to_string())
}

fn query(db: &Path) -> rusqlite::Result<BTreeSet<String>> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    conn.busy_timeout(Duration::from_secs(1))?;
    conn.execute_batch("PRAGMA cell_size_check = ON; PRAGMA mmap_size = 0;")?;
    let exists: bool = conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'django_migrations'",
        [],
        |row| row.get::<_, i64>(0).map(|n| n > 0),
    )?;
    let mut applied = BTreeSet::new();
    if !exists {
        return Ok(applied);
    }
    let mut stmt = conn.prepare("SELECT app, name FROM django_migrations LIMIT ?1")?;
    let mut rows = stmt.query([MAX_ROWS as i64 + 1])?;
    while let Some(row) = rows.next()? {
        // Anything but text (a NULL the app's owner stored) is "cannot tell".
        let (app, name): (String, String) = (row.get(0)?, row.get(1)?);
        if app.len() > MAX_NAME || name.len() > MAX_NAME || applied.len() >= MAX_ROWS {
            return Err(rusqlite::Error::InvalidQuery);
        }
        applied.insert(format!("{app}.{name}"));
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "bitpoll-launcher-sqlite-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("db.sqlite3")
    }

    #[test]
    fn reads_applied_migrations_and_treats_a_missing_table_as_none() {
        let db = temp("applied");
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE other (x);").unwrap();
        assert_eq!(applied_migrations(&db).unwrap(), BTreeSet::new());
        conn.execute_batch(
            "CREATE TABLE django_migrations (id INTEGER PRIMARY KEY, app TEXT, name TEXT, applied TEXT);
             INSERT INTO django_migrations (app, name) VALUES ('poll', '0001_initial'), ('auth', '0001_initial');",
        )
        .unwrap();
        drop(conn);
        let got = applied_migrations(&db).unwrap();
        assert_eq!(
            got,
            ["auth.0001_initial", "poll.0001_initial"]
                .into_iter()
                .map(String::from)
                .collect()
        );
        // Nothing was created beside it.
        let names: Vec<_> = std::fs::read_dir(db.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("db.sqlite3")]);
        std::fs::remove_dir_all(db.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_link_a_fifo_or_a_second_name_is_refused_without_blocking() {
        let db = temp("swapped");
        let dir = db.parent().unwrap().to_path_buf();
        let real = dir.join("real.sqlite3");
        std::fs::write(&real, b"").unwrap();
        std::os::unix::fs::symlink(&real, &db).unwrap();
        let e = applied_migrations(&db).unwrap_err();
        assert!(e.contains("is a symbolic link"), "{e}");
        std::fs::remove_file(&db).unwrap();
        nix::unistd::mkfifo(&db, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // A FIFO nobody writes to: opening it for reading would block without O_NONBLOCK.
        let e = applied_migrations(&db).unwrap_err();
        assert!(e.contains("is not a regular file"), "{e}");
        std::fs::remove_file(&db).unwrap();
        std::fs::hard_link(&real, &db).unwrap();
        let e = applied_migrations(&db).unwrap_err();
        assert!(e.contains("has 2 names"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_file_or_a_write_ahead_log_means_cannot_tell() {
        let db = temp("damaged");
        std::fs::write(&db, b"SQLite format 3\0restored from a backup").unwrap();
        assert!(applied_migrations(&db).is_err());
        std::fs::write(&db, b"").unwrap();
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        std::fs::write(&wal, b"x").unwrap();
        let e = applied_migrations(&db).unwrap_err();
        assert!(e.contains("-wal is present"), "{e}");
        std::fs::remove_dir_all(db.parent().unwrap()).unwrap();
    }
}
