//! Rotation as the OpenTelemetry Collector's file exporter does it (its `rotation` block, after
//! lumberjack): the full file is renamed with a timestamp before its extension, a new one is
//! started at the configured path, and old backups are deleted by count and by age.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use serde::Deserialize;
use tracescale_core::config::HumanDuration;

/// The `rotation` table of the `file` exporter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationConfig {
    /// The size in megabytes (MiB) at which the file is rotated; may be fractional.
    #[serde(default = "default_max_megabytes")]
    pub max_megabytes: f64,
    /// Delete backups whose timestamp is older than this many days (24 h each); 0 keeps them.
    #[serde(default)]
    pub max_days: u32,
    /// Keep at most this many backups, the newest; 0 keeps them all.
    #[serde(default = "default_max_backups")]
    pub max_backups: usize,
    /// Timestamps in backup names in the host's time zone instead of UTC.
    #[serde(default)]
    pub localtime: bool,
    /// Also rotate a file once it is this old (at its next write).
    #[serde(default)]
    pub every: Option<HumanDuration>,
}

fn default_max_megabytes() -> f64 {
    100.0
}

fn default_max_backups() -> usize {
    100
}

impl RotationConfig {
    /// `max_megabytes` in bytes.
    pub(super) fn max_bytes(&self) -> u64 {
        (self.max_megabytes * 1024.0 * 1024.0) as u64
    }

    fn zone(&self) -> TimeZone {
        if self.localtime {
            TimeZone::system()
        } else {
            TimeZone::UTC
        }
    }
}

/// The layout of lumberjack's backup timestamps: `2006-01-02T15-04-05.000`.
const STAMP: &str = "%Y-%m-%dT%H-%M-%S%.3f";

/// `path` split around where the timestamp goes: `dir/spans.jsonl.zst` is
/// (`dir`, `spans.jsonl`, `.zst`), as lumberjack splits it (at the last dot).
fn parts(path: &Path) -> (PathBuf, String, String) {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rfind('.').filter(|i| *i > 0) {
        Some(i) => (dir, name[..i].to_string(), name[i..].to_string()),
        None => (dir, name, String::new()),
    }
}

/// The name `path` takes when rotated at `now`: `spans.jsonl` → `spans-2024-05-01T12-30-00.000.jsonl`.
pub(super) fn backup_name(path: &Path, now: Timestamp, config: &RotationConfig) -> PathBuf {
    let (dir, stem, ext) = parts(path);
    let stamp = now.to_zoned(config.zone()).strftime(STAMP).to_string();
    dir.join(format!("{stem}-{stamp}{ext}"))
}

/// The backups of `path` that `config` no longer keeps: older than `max_days`, or beyond the
/// newest `max_backups`. Files whose name does not parse as a backup are never chosen.
pub(super) fn expired(
    path: &Path,
    now: Timestamp,
    config: &RotationConfig,
) -> std::io::Result<Vec<PathBuf>> {
    let (dir, stem, ext) = parts(path);
    let prefix = format!("{stem}-");
    let zone = config.zone();
    let mut backups: Vec<(Timestamp, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stamp) = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(&ext))
        else {
            continue;
        };
        let Ok(at) = DateTime::strptime(STAMP, stamp)
            .and_then(|dt| dt.to_zoned(zone.clone()))
            .map(|z| z.timestamp())
        else {
            continue;
        };
        backups.push((at, entry.path()));
    }
    backups.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    let cutoff =
        (config.max_days > 0).then(|| now.as_second() - i64::from(config.max_days) * 24 * 3600);
    Ok(backups
        .into_iter()
        .enumerate()
        .filter(|(i, (at, _))| {
            (config.max_backups > 0 && *i >= config.max_backups)
                || cutoff.is_some_and(|c| at.as_second() < c)
        })
        .map(|(_, (_, p))| p)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_days: u32, max_backups: usize) -> RotationConfig {
        RotationConfig {
            max_megabytes: 1.0,
            max_days,
            max_backups,
            localtime: false,
            every: None,
        }
    }

    #[test]
    fn backups_are_named_like_the_collectors() {
        let at: Timestamp = "2022-09-14T05:02:14.173Z".parse().unwrap();
        let c = config(0, 0);
        assert_eq!(
            backup_name(Path::new("/d/data.json"), at, &c),
            Path::new("/d/data-2022-09-14T05-02-14.173.json")
        );
        assert_eq!(
            backup_name(Path::new("/d/spans.jsonl.zst"), at, &c),
            Path::new("/d/spans.jsonl-2022-09-14T05-02-14.173.zst")
        );
        assert_eq!(
            backup_name(Path::new("spans"), at, &c),
            Path::new("./spans-2022-09-14T05-02-14.173")
        );
    }

    #[test]
    fn expired_backups_are_the_oldest_beyond_the_count_and_those_past_the_age() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spans.jsonl");
        let now: Timestamp = "2024-05-10T00:00:00Z".parse().unwrap();
        let day = |d: i64| now - jiff::SignedDuration::from_hours(24 * d);
        for d in 0..5 {
            std::fs::write(backup_name(&path, day(d), &config(0, 0)), "").unwrap();
        }
        for other in [
            "spans.jsonl",
            "spans-notes.jsonl",
            "other-2024-05-01T00-00-00.000.jsonl",
        ] {
            std::fs::write(dir.path().join(other), "").unwrap();
        }
        let names = |c: &RotationConfig| {
            let mut v: Vec<String> = expired(&path, now, c)
                .unwrap()
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            names(&config(0, 3)),
            [
                "spans-2024-05-06T00-00-00.000.jsonl",
                "spans-2024-05-07T00-00-00.000.jsonl"
            ]
        );
        assert_eq!(
            names(&config(2, 0)),
            [
                "spans-2024-05-06T00-00-00.000.jsonl",
                "spans-2024-05-07T00-00-00.000.jsonl"
            ]
        );
        assert_eq!(names(&config(1, 1)).len(), 4);
        assert!(names(&config(0, 0)).is_empty());
    }
}
