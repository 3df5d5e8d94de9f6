//! Settings from a TOML file: the lowest layer, under the environment and the flags.

use crate::firehose;
use crate::harness::temp_dir;

fn config_file(name: &str, text: &str) -> String {
    let path = temp_dir(name).join("firehose.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn file_values_become_the_defaults_that_env_and_flags_override() {
    let file = config_file(
        "config-defaults",
        "out = \"/srv/archive\"\nmetrics_addr = \"127.0.0.1:9999\"\njetstream-url = [\"ws://a/subscribe\", \"ws://b/subscribe\"]\n",
    );
    let help = firehose(&["run", "--config", &file, "--help"], b"");
    assert_eq!(help.status.code(), Some(0));
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("[default: /srv/archive]"), "{help}");
    assert!(help.contains("[default: 127.0.0.1:9999]"), "{help}");
    assert!(
        help.contains("[default: ws://a/subscribe ws://b/subscribe]"),
        "{help}"
    );
}

#[test]
fn a_bad_value_in_the_file_is_named_and_the_environment_overrides_it() {
    let file = config_file("config-bad-value", "buffer-size = \"lots\"\n");
    let out = firehose(&["run", "--config", &file, "--out", "/nonexistent/x"], b"");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--buffer-size") && err.contains("lots"),
        "{err}"
    );

    // The same bad value, overridden by the environment, is never parsed: `--help` shows the
    // environment's value winning.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_firehose"))
        .args(["run", "--config", &file, "--help"])
        .env("FIREHOSE_BUFFER_SIZE", "64MiB")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("FIREHOSE_BUFFER_SIZE=64MiB"), "{help}");
}

#[test]
fn an_unknown_setting_is_a_usage_error_that_names_it() {
    let file = config_file("config-unknown", "outt = \"./data\"\n");
    let out = firehose(
        &["write", "--config", &file, "--redis-url", "redis://x"],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown setting \"outt\""), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let missing = firehose(&["run", "--config", "/nonexistent/firehose.toml"], b"");
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read the config file"));
}
