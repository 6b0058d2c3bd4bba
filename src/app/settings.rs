//! The studio's settings and data directory: `settings.json`, `autosave.json` and `studio.log`
//! live there (tests point it at a temporary folder).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How step previews are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PreviewMode {
    /// The model's linear latent-to-RGB map on every step (costs almost nothing).
    #[default]
    LatentMap,
    /// No previews: only finished pictures.
    Off,
}

/// Saved settings. Missing fields take their defaults, so old files still load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Tensor threads (0 = one per core); applies at the next start.
    pub threads: usize,
    /// Step previews.
    pub preview: PreviewMode,
    /// Cache budget in MiB (conditionings, inverted latents, finished pictures).
    pub cache_mib: usize,
    /// Where every finished render is saved as a PNG, when set.
    pub output_folder: Option<PathBuf>,
    /// Live mode: the picture re-renders while a stroke is painted, with the built-in model's
    /// few-step student.
    pub live: bool,
    /// In Live mode, the picture after a stroke ends renders with the full built-in model
    /// instead of the student.
    pub live_final_full: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            threads: 0,
            preview: PreviewMode::LatentMap,
            cache_mib: 256,
            output_folder: None,
            live: false,
            live_final_full: false,
        }
    }
}

/// The settings file in `data_dir`.
pub fn settings_path(data_dir: &Path) -> PathBuf {
    data_dir.join("settings.json")
}

/// The autosaved graph in `data_dir`.
pub fn autosave_path(data_dir: &Path) -> PathBuf {
    data_dir.join("autosave.json")
}

/// The log file in `data_dir`.
pub fn log_path(data_dir: &Path) -> PathBuf {
    data_dir.join("studio.log")
}

impl Settings {
    /// Reads the settings, or the defaults (with the reason) when the file is missing or broken.
    pub fn load(data_dir: &Path) -> (Self, Option<String>) {
        let path = settings_path(data_dir);
        let Ok(text) = std::fs::read_to_string(&path) else { return (Self::default(), None) };
        match serde_json::from_str(&text) {
            Ok(settings) => (settings, None),
            Err(e) => (Self::default(), Some(format!("{}: {e}; using default settings", path.display()))),
        }
    }

    /// Writes the settings atomically.
    pub fn save(&self, data_dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(data_dir)?;
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        crate::imageio::write_atomic(&settings_path(data_dir), text.as_bytes())
    }
}

/// The default data directory: `$XDG_DATA_HOME/latent-studio`, else `~/.local/share/latent-studio`,
/// else a folder in the temporary directory.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("latent-studio");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local").join("share").join("latent-studio");
    }
    std::env::temp_dir().join("latent-studio")
}

/// Appends a timestamped line to the log (best effort: a log that cannot be written is no
/// reason to stop the studio).
pub fn log(data_dir: &Path, line: &str) {
    use std::io::Write;
    let seconds =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(log_path(data_dir)) {
        let _ = writeln!(file, "{seconds} {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_a_broken_file_falls_back_to_defaults_with_a_reason() {
        let dir = std::env::temp_dir().join(format!("latent-studio-settings-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let settings = Settings { threads: 1, cache_mib: 64, ..Settings::default() };
        assert!(settings.save(&dir).is_ok());
        assert_eq!(Settings::load(&dir), (settings, None));
        let _ = std::fs::write(settings_path(&dir), "{\"threads\": \"two\"}");
        let (loaded, reason) = Settings::load(&dir);
        assert_eq!(loaded, Settings::default());
        assert!(reason.is_some_and(|r| r.contains("settings.json")));
        let _ = std::fs::write(settings_path(&dir), "{\"threads\": 3}");
        assert_eq!(Settings::load(&dir).0.cache_mib, 256, "missing fields take defaults");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
