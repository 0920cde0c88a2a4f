//! Log lines through `slog`, in the original's shape:
//! `[pubsocketd] 2026/11/28 13:43:50 INFO [init] listening ...`.
//!
//! Each line goes to stdout and, with `-ps-log-file`, is appended to that
//! file too: the same line in both. A file that fails later (disk full) is
//! reported once on stderr and the relay keeps serving; logging is never
//! on the per-message path.

use slog::{Drain, Level, Never, OwnedKVList, Record, KV};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Builds the root logger. Fails when the log file cannot be opened.
pub fn logger(level: Level, file: Option<&Path>) -> Result<slog::Logger, String> {
    let file = file
        .map(|path| {
            open_append(path)
                .map(|f| (f, path.to_path_buf()))
                .map_err(|e| format!("cannot open -ps-log-file {}: {e}", path.display()))
        })
        .transpose()?;
    let drain = Lines {
        level,
        file: Mutex::new(file.map(|(f, path)| LogFile {
            file: f,
            path,
            failing: false,
        })),
    };
    Ok(slog::Logger::root(drain, slog::o!()))
}

/// Opens for appending, creating the file with mode 0660 as the original.
fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o660)
        .open(path)
}

struct LogFile {
    file: File,
    path: PathBuf,
    failing: bool,
}

/// The drain: formats a line once, writes it to stdout and the file.
struct Lines {
    level: Level,
    file: Mutex<Option<LogFile>>,
}

impl Drain for Lines {
    type Ok = ();
    type Err = Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), Never> {
        if !record.level().is_at_least(self.level) {
            return Ok(());
        }
        let line = format_line(record, values);
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // The file first: whoever sees a line on stdout finds it there too.
        if let Some(f) = file.as_mut() {
            f.write(line.as_bytes());
        }
        let _ = io::stdout().lock().write_all(line.as_bytes());
        Ok(())
    }
}

impl LogFile {
    /// Appends a line; says once on stderr when the file starts failing and
    /// once when it works again.
    fn write(&mut self, line: &[u8]) {
        match self.file.write_all(line) {
            Ok(()) if self.failing => {
                self.failing = false;
                eprintln!(
                    "[pubsocketd] log file {} is writable again",
                    self.path.display()
                );
            }
            Ok(()) => {}
            Err(e) if !self.failing => {
                self.failing = true;
                eprintln!(
                    "[pubsocketd] cannot write log file {}: {e}; still serving, logging to stdout only until it recovers",
                    self.path.display()
                );
            }
            Err(_) => {}
        }
    }
}

fn format_line(record: &Record<'_>, values: &OwnedKVList) -> String {
    let mut line = String::with_capacity(128);
    let _ = write!(
        line,
        "[pubsocketd] {} {} {}",
        timestamp(std::time::SystemTime::now()),
        record.level().as_short_str(),
        record.msg()
    );
    let mut kv = KvText(&mut line);
    let _ = record.kv().serialize(record, &mut kv);
    let _ = values.serialize(record, &mut kv);
    line.push('\n');
    line
}

/// Appends ` key=value` pairs.
struct KvText<'a>(&'a mut String);

impl slog::Serializer for KvText<'_> {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

/// `YYYY/MM/DD HH:MM:SS` in UTC, as Go's log package prints.
pub fn timestamp(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}/{m:02}/{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970/01/01 00:00:00");
        let t = UNIX_EPOCH + Duration::from_secs(1_405_863_830);
        assert_eq!(timestamp(t), "2014/07/20 13:43:50");
        let leap = UNIX_EPOCH + Duration::from_secs(951_825_600);
        assert_eq!(timestamp(leap), "2000/02/29 12:00:00");
    }

    #[test]
    fn same_line_in_stdout_and_file_and_level_filter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.log");
        let log = logger(Level::Info, Some(&path)).unwrap();
        slog::info!(log, "[init] hello"; "k" => 1);
        slog::debug!(log, "hidden");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("[pubsocketd] "), "{text}");
        assert!(text.ends_with(" INFO [init] hello k=1\n"), "{text}");
        assert_eq!(text.lines().count(), 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777 & !0o022, 0o660 & !0o022);
    }

    #[test]
    fn unwritable_log_file_is_a_clear_error() {
        let e = logger(Level::Info, Some(Path::new("/nonexistent/dir/p.log"))).unwrap_err();
        assert!(
            e.starts_with("cannot open -ps-log-file /nonexistent/dir/p.log"),
            "{e}"
        );
    }
}
