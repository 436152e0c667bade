//! The example configuration shipped in packaging/ stays loadable.

use std::path::Path;

use jms_agent::daemon::config::AgentdConfig;

#[test]
fn the_packaged_example_agentd_toml_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/etc/jms/agentd.toml");
    let config = AgentdConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    assert_eq!(
        config.policy.as_deref(),
        Some(Path::new("/etc/jms/policy.yaml"))
    );
    assert_eq!(config.nss_cache, Path::new("/var/cache/jms/nss.db"));
}

#[test]
fn the_example_with_every_commented_key_enabled_loads_too() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/etc/jms/agentd.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // Uncomment `#key = value` and `#[table]` lines, keeping prose comments.
    let enabled: String = text
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest)
                if rest.starts_with('[')
                    || rest
                        .split_once(" = ")
                        .is_some_and(|(k, _)| !k.contains(' ')) =>
            {
                rest
            }
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let config: AgentdConfig = toml::from_str(&enabled)
        .unwrap_or_else(|e| panic!("every documented key must parse: {e}\n{enabled}"));
    assert_eq!(config.lockout.max_failures, 5);
}
