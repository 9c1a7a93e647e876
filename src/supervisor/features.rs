//! What a consumer configuration needs of the crate's features: a build without `async` has
//! no runtime for `--kind async` or `--concurrency`, one without `metrics` no Prometheus
//! endpoint. The flags exist in every build (an app's command line and config files read the
//! same), and a configuration that needs a missing feature is refused by name.

use super::{Config, WorkerKind};
use crate::error::{Error, Result};

/// Refuse what this build cannot run.
pub(super) fn check(cfg: &Config) -> Result<()> {
    let needs_async = cfg.kind == WorkerKind::Async || cfg.concurrency > 1;
    if needs_async && !cfg!(feature = "async") {
        return Err(Error::Config(
            "async workers (--kind async, --concurrency over 1) need the `async` feature, which \
             this build was compiled without"
                .into(),
        ));
    }
    if cfg.metrics_bind.is_some() && !cfg!(feature = "metrics") {
        return Err(Error::Config(
            "--metrics-bind needs the `metrics` feature, which this build was compiled without"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_needing_a_feature_left_out_is_refused_by_name() {
        let cases = [
            (
                Config {
                    kind: WorkerKind::Async,
                    ..Config::default()
                },
                "async",
                cfg!(feature = "async"),
            ),
            (
                Config {
                    kind: WorkerKind::Process,
                    concurrency: 8,
                    ..Config::default()
                },
                "async",
                cfg!(feature = "async"),
            ),
            (
                Config {
                    metrics_bind: Some("127.0.0.1:0".parse().unwrap()),
                    ..Config::default()
                },
                "metrics",
                cfg!(feature = "metrics"),
            ),
        ];
        for (cfg, feature, built) in cases {
            match check(&cfg) {
                Ok(()) => assert!(built, "{feature} is not built in, yet {cfg:?} was taken"),
                Err(Error::Config(m)) => {
                    assert!(!built, "{feature} is built in, yet refused: {m}");
                    assert!(m.contains(&format!("`{feature}` feature")), "{m}");
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(check(&Config::default()).is_ok());
    }
}
