//! Log lines through `slog`, in the original's shape:
//! `[pubsocketd] 2026/11/28 13:43:50 INFO [init] listening ...`.
//!
//! Each line goes to stdout and, with `-ps-log-file`, is appended to that
//! file too: the same line in both. A file that fails later (disk full) is
//! reported once on stderr and the relay keeps serving; logging is never
//! on the per-message path. `-log-format=json` writes one JSON object per
//! line instead; SIGHUP reopens the file (for logrotate) through
//! [`LogHandle::reopen`].

use crate::ops::config::LogFormat;
use slog::{Drain, Level, Never, OwnedKVList, Record, KV};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Builds the root logger, and the handle that reopens its file. Fails
/// when the log file cannot be opened.
pub fn logger(
    level: Level,
    format: LogFormat,
    file: Option<&Path>,
) -> Result<(slog::Logger, LogHandle), String> {
    let file = file
        .map(|path| {
            open_append(path)
                .map(|f| LogFile {
                    file: f,
                    path: path.to_path_buf(),
                    failing: false,
                })
                .map_err(|e| format!("cannot open -ps-log-file {}: {e}", path.display()))
        })
        .transpose()?;
    let file = Arc::new(Mutex::new(file));
    let drain = Lines {
        level,
        format,
        file: file.clone(),
    };
    Ok((slog::Logger::root(drain, slog::o!()), LogHandle(file)))
}

/// Reopens the log file after logrotate moved it.
#[derive(Clone)]
pub struct LogHandle(Arc<Mutex<Option<LogFile>>>);

impl LogHandle {
    /// Opens the file's path anew; on failure keeps the old file and says
    /// why.
    pub fn reopen(&self) -> Result<(), String> {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(current) = guard.as_mut() else {
            return Ok(());
        };
        let f = open_append(&current.path)
            .map_err(|e| format!("cannot reopen {}: {e}", current.path.display()))?;
        current.file = f;
        current.failing = false;
        Ok(())
    }
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
    format: LogFormat,
    file: Arc<Mutex<Option<LogFile>>>,
}

impl Drain for Lines {
    type Ok = ();
    type Err = Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), Never> {
        if !record.level().is_at_least(self.level) {
            return Ok(());
        }
        let line = match self.format {
            LogFormat::Text => format_line(record, values),
            LogFormat::Json => json_line(record, values),
        };
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

fn json_line(record: &Record<'_>, values: &OwnedKVList) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("ts".into(), rfc3339(std::time::SystemTime::now()).into());
    obj.insert("level".into(), level_name(record.level()).into());
    obj.insert("msg".into(), record.msg().to_string().into());
    let mut kv = KvJson(&mut obj);
    let _ = record.kv().serialize(record, &mut kv);
    let _ = values.serialize(record, &mut kv);
    let mut line = serde_json::Value::Object(obj).to_string();
    line.push('\n');
    line
}

/// The level names log shippers expect.
fn level_name(level: Level) -> &'static str {
    match level {
        Level::Critical => "critical",
        Level::Error => "error",
        Level::Warning => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

/// Adds key-value pairs as JSON string fields.
struct KvJson<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl slog::Serializer for KvJson<'_> {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        self.0.insert(key.to_string(), val.to_string().into());
        Ok(())
    }
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

/// `YYYY-MM-DDTHH:MM:SSZ`, for JSON lines.
fn rfc3339(t: std::time::SystemTime) -> String {
    timestamp(t).replace('/', "-").replace(' ', "T") + "Z"
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
        let (log, _) = logger(Level::Info, LogFormat::Text, Some(&path)).unwrap();
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
        let e = logger(
            Level::Info,
            LogFormat::Text,
            Some(Path::new("/nonexistent/dir/p.log")),
        )
        .err()
        .unwrap();
        assert!(
            e.starts_with("cannot open -ps-log-file /nonexistent/dir/p.log"),
            "{e}"
        );
    }
}

#[cfg(test)]
mod json_tests {
    use super::*;

    #[test]
    fn json_lines_parse_and_reopen_follows_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.log");
        let (log, handle) = logger(Level::Info, LogFormat::Json, Some(&path)).unwrap();
        slog::warn!(log, "[redis] lost \"quoted\""; "attempt" => 3);
        let moved = dir.path().join("p.log.1");
        std::fs::rename(&path, &moved).unwrap();
        handle.reopen().unwrap();
        slog::info!(log, "after rotation");
        let first: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&moved).unwrap().trim()).unwrap();
        assert_eq!(first["level"], "warn");
        assert_eq!(first["msg"], "[redis] lost \"quoted\"");
        assert_eq!(first["attempt"], "3");
        assert!(first["ts"].as_str().unwrap().ends_with('Z'));
        let second: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&path).unwrap().trim()).unwrap();
        assert_eq!(second["msg"], "after rotation");
    }
}
