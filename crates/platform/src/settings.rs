//! Typed settings for every Mercato process.
//!
//! Layers, later wins: the built-in `config/default.toml`, `config/<MERCATO_ENV>.toml`
//! when present, then `MERCATO__SECTION__KEY` environment variables. Secrets are read from
//! their own environment variables only and never from files.

use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use secrecy::SecretString;
use serde::Deserialize;

const DEFAULTS: &str = include_str!("../../../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub log: LogSettings,
    pub auth: AuthSettings,
    pub rate_limit: RateLimitSettings,
    pub gateway: GatewaySettings,
    pub jobs: JobSettings,
    pub content: ContentSettings,
    /// Secrets, filled from the environment after the files are read.
    #[serde(skip)]
    pub secrets: Secrets,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub request_timeout_secs: u64,
    pub body_limit_bytes: usize,
    /// Limit for bulk uploads (`/imports` paths), which stream to the database.
    pub import_limit_bytes: usize,
    pub cors_origins: Vec<String>,
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    pub max_connections: u32,
    pub acquire_timeout_secs: u64,
    pub migrate_on_start: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    pub key_cache_ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayMode {
    Embedded,
    Proxy,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GatewaySettings {
    pub mode: GatewayMode,
    pub upstreams: Upstreams,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Upstreams {
    pub profiling: String,
    pub content: String,
    pub metrics: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct JobSettings {
    pub workers: usize,
    pub poll_interval_ms: u64,
    pub heartbeat_secs: u64,
    pub stale_after_secs: u64,
    /// First retry delay; each further attempt waits twice as long.
    pub retry_base_ms: u64,
}

/// The content service's models and generation worker.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentSettings {
    /// GGUF file of the generative model (llama or qwen2 architecture). Relative paths are
    /// resolved against the working directory.
    pub model_path: String,
    /// Directory with the embedding model (`model.safetensors`, `config.json`, `tokenizer.json`).
    pub embedding_dir: String,
    /// `auto`, `cpu` or `cuda:N`.
    pub device: String,
    /// `auto` (dequantise to f32 when that stays under `f32_limit_bytes`), `f32` or `quantized`.
    pub weights: String,
    pub f32_limit_bytes: usize,
    /// Sequences decoded together by the batching worker.
    pub max_batch: usize,
    /// Requests waiting for a place in the batch; beyond it generation answers 429.
    pub queue_capacity: usize,
    /// Prompt tokens prefilled per worker step, so long prompts do not stall decoding.
    pub prefill_chunk: usize,
    /// Longest sequence (prompt + output) served.
    pub max_context: usize,
    /// Most tokens one request may ask for.
    pub max_new_tokens: usize,
}

/// Values that must never be written to a file under `config/`.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// `DATABASE_URL`.
    pub database_url: Option<SecretString>,
    /// `MERCATO_ADMIN_KEY`: the operator key that creates tenants and their keys.
    pub admin_key: Option<SecretString>,
    /// `MERCATO_INTERNAL_TOKEN`: guards the tenant headers the gateway sends upstream.
    pub internal_token: Option<SecretString>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid configuration: {0}")]
    Invalid(#[from] config::ConfigError),
}

impl Settings {
    /// Loads settings for this process from files and the environment.
    pub fn load() -> Result<Self, SettingsError> {
        let env = std::env::var("MERCATO_ENV").unwrap_or_else(|_| "local".to_owned());
        Self::load_env(&env)
    }

    /// Loads settings as for environment `env` (`config/<env>.toml`).
    pub fn load_env(env: &str) -> Result<Self, SettingsError> {
        let dir = config_dir();
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(dir) = dir {
            builder =
                builder.add_source(File::from(dir.join(format!("{env}.toml"))).required(false));
        }
        let config = builder
            .add_source(
                Environment::with_prefix("MERCATO")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("server.cors_origins")
                    .try_parsing(true),
            )
            .build()?;
        let mut settings: Settings = config.try_deserialize()?;
        settings.secrets = Secrets::from_env();
        Ok(settings)
    }

    pub fn bind_address(&self) -> String {
        format!("{}:{}", self.server.host, self.server.port)
    }
}

impl Secrets {
    pub fn from_env() -> Self {
        let read = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .map(SecretString::from)
        };
        Self {
            database_url: read("DATABASE_URL"),
            admin_key: read("MERCATO_ADMIN_KEY"),
            internal_token: read("MERCATO_INTERNAL_TOKEN"),
        }
    }
}

/// `MERCATO_CONFIG_DIR`, else the nearest `config/` above the working directory.
/// Resolves a path from the settings: absolute as given, relative against the project root
/// (the directory holding `config/`), else against the working directory.
pub fn resolve_path(path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    if p.is_absolute() {
        return p;
    }
    match config_dir().as_deref().and_then(Path::parent) {
        Some(root) => root.join(p),
        None => p,
    }
}

fn config_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("MERCATO_CONFIG_DIR") {
        return Some(PathBuf::from(dir));
    }
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .map(|p: &Path| p.join("config"))
        .find(|p| p.join("default.toml").is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_defaults_parse() {
        let config = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .build()
            .expect("defaults build");
        let settings: Settings = config.try_deserialize().expect("defaults deserialize");
        assert_eq!(settings.gateway.mode, GatewayMode::Embedded);
        assert_eq!(settings.server.port, 8080);
        assert!(settings.rate_limit.burst > 0);
    }
}
