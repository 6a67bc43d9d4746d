use super::*;

#[test]
fn env_and_flags_override_the_file() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c.toml");
    std::fs::write(&p, "[log]\npartitions = 4\n[websocket]\ndev_mode = true\n").unwrap();
    let env = vec![
        ("HERALD_LOG__PARTITIONS".to_string(), "6".to_string()),
        (
            "HERALD_REDIS__URL".to_string(),
            "redis://127.0.0.1:1".to_string(),
        ),
        (
            "HERALD_GATEWAY__API_KEYS".to_string(),
            "[\"a\", \"b\"]".to_string(),
        ),
        ("OTHER".to_string(), "x".to_string()),
    ];
    let c = Config::load(
        &p,
        false,
        env.into_iter(),
        &[(
            "server",
            "listen",
            toml::Value::String("127.0.0.1:1".into()),
        )],
    )
    .unwrap();
    assert_eq!(c.log.partitions, 6);
    assert_eq!(c.redis.url, "redis://127.0.0.1:1");
    assert_eq!(c.gateway.api_keys, vec!["a", "b"]);
    assert_eq!(c.server.listen, "127.0.0.1:1");
}

#[test]
fn unknown_keys_and_bad_values_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c.toml");
    std::fs::write(&p, "[log]\npartitons = 4\n").unwrap();
    let e = Config::load(&p, false, std::iter::empty(), &[]).unwrap_err();
    // The file's errors name the file and the line.
    let e = format!("{e:#}");
    assert!(
        e.contains("c.toml") && e.contains("line 2") && e.contains("partitons"),
        "{e}"
    );
    // A variable's bad value says a variable or flag set it.
    std::fs::write(&p, "[websocket]\ndev_mode = true\n").unwrap();
    let env = vec![(
        "HERALD_WEBSOCKET__HEARTBEAT_MS".to_string(),
        "soon".to_string(),
    )];
    let e = Config::load(&p, false, env.into_iter(), &[]).unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("HERALD_") && e.contains("websocket.heartbeat_ms"),
        "{e}"
    );
    std::fs::write(
        &p,
        "[log]\ndurability = \"sometimes\"\n[websocket]\ndev_mode = true\n",
    )
    .unwrap();
    assert!(Config::load(&p, false, std::iter::empty(), &[]).is_err());
}

#[test]
fn preference_cache_lifetimes_are_bounded() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c.toml");
    let load = |body: &str| {
        std::fs::write(&p, format!("[websocket]\ndev_mode = true\n{body}")).unwrap();
        Config::load(&p, false, std::iter::empty(), &[])
    };
    let ok = load("[preferences]\ncache_ttl_ms = 1000\nalone_cache_ttl_ms = 60000\n");
    assert!(ok.is_ok(), "{ok:?}");
    // In a cluster a change must be honoured everywhere within a second.
    let e = load("[preferences]\ncache_ttl_ms = 5000\n").unwrap_err();
    assert!(e.to_string().contains("preferences.cache_ttl_ms"), "{e}");
    assert!(load("[preferences]\ncache_ttl_ms = 0\n").is_err());
    assert!(load("[preferences]\nalone_cache_ttl_ms = 0\n").is_err());
    assert!(load("[preferences]\nalone_cache_ttl_ms = 3600001\n").is_err());
}

#[test]
fn durations_are_bounded_and_the_error_names_the_key() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c.toml");
    let load = |body: &str| {
        std::fs::write(&p, format!("[websocket]\ndev_mode = true\n{body}")).unwrap();
        Config::load(&p, false, std::iter::empty(), &[])
    };
    let e = load("heartbeat_ms = 0\n").unwrap_err();
    assert!(e.to_string().contains("websocket.heartbeat_ms = 0"), "{e}");
    let e = load("heartbeat_ms = 50000\n").unwrap_err();
    assert!(e.to_string().contains("idle_timeout_ms"), "{e}");
    let e = load("[redis]\ntimeout_ms = 0\n").unwrap_err();
    assert!(e.to_string().contains("redis.timeout_ms"), "{e}");
    assert!(load("[fanout]\ncheckpoint_ms = 0\n").is_err());
    assert!(load("[fanout]\nreset_positions = [\"3=soon\"]\n").is_err());
    assert!(load("[fanout]\nreset_positions = [\"99=latest\"]\n").is_err());
    assert!(load("[fanout]\nreset_positions = [\"1=latest\", \"all=earliest\"]\n").is_ok());
    assert!(load("[http]\ncors_origins = [\"https://app.example.com/\"]\n").is_err());
    assert!(load("[http]\ncors_origins = [\"https://app.example.com\", \"*\"]\n").is_ok());
    assert!(load("[redis]\nwait_replicas = 17\n").is_err());
    assert!(load("").is_ok());
}

#[test]
fn replication_settings_are_checked_together() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c.toml");
    let load = |extra: &str| {
        std::fs::write(
            &p,
            format!("[websocket]\ndev_mode = true\n[server]\nnode_id = \"node-1\"\n{extra}"),
        )
        .unwrap();
        Config::load(&p, false, std::iter::empty(), &[]).and_then(|c| c.validate().map(|_| c))
    };
    let peers = r#"["node-1=127.0.0.1:7411", "node-2=127.0.0.1:7412", "node-3=127.0.0.1:7413"]"#;
    let err = |extra: &str| load(extra).err().map(|e| e.to_string()).unwrap_or_default();
    // Replication needs a cluster.
    assert!(err("[log]\nreplication_factor = 3\n").contains("server.cluster"));
    let cluster = "cluster = true\ncluster_key = \"k\"\n";
    // Peers that do not name this node: a node that joins a running
    // cluster (it holds nothing until `herald cluster add`).
    load(&format!(
        "{cluster}[log]\nreplication_factor = 3\n[replication]\npeers = [\"node-2=a:1\", \"node-3=b:1\", \"node-4=c:1\"]\n"
    ))
    .expect("a joining node's config");
    // Malformed peers, too few of them.
    let e = err(&format!(
        "{cluster}[log]\nreplication_factor = 3\n[replication]\npeers = [\"node-1\"]\n"
    ));
    assert!(e.contains("name=host:port"), "{e}");
    let e = err(&format!(
        "{cluster}[log]\nreplication_factor = 3\n[replication]\npeers = [\"node-1=127.0.0.1:7411\"]\n"
    ));
    assert!(e.contains("replication_factor"), "{e}");
    let e = err(&format!(
        "{cluster}[log]\nreplication_factor = 3\n[replication]\npeers = {peers}\nelection_ms = 100\n"
    ));
    assert!(e.contains("election_ms"), "{e}");
    // A good one: replicated, event ids without a node name.
    let c = load(&format!(
        "{cluster}[log]\nreplication_factor = 3\n[replication]\npeers = {peers}\n"
    ))
    .expect("valid");
    assert!(c.replicated());
    assert_eq!(c.id_scope(), "");
    assert_eq!(c.replica_config().expect("peers").peers.len(), 3);
}

#[test]
fn kinds_are_declared_in_the_file_or_a_variable_and_bad_ones_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c.toml");
    std::fs::write(
        &p,
        "[websocket]\ndev_mode = true\n[kinds.cfg_repost]\nnotify = [\"recipient\", \"followers\"]\npartition_by = \"actor\"\ndefault_mode = \"digest\"\n",
    )
    .unwrap();
    let env = vec![(
        "HERALD_KINDS__CFG_WAVE".to_string(),
        "{notify = [\"recipient\"], fold = true}".to_string(),
    )];
    let c = Config::load(&p, false, env.into_iter(), &[]).unwrap();
    // The built-in kinds stay, with their rules; the declared ones join.
    let repost = herald_types::EventKind::parse("cfg_repost").unwrap();
    assert!(repost.to_followers() && repost.needs_recipient());
    assert_eq!(
        repost.rules().default_mode,
        Some(herald_types::kind::DefaultMode::Digest)
    );
    let wave = herald_types::EventKind::parse("cfg_wave").unwrap();
    assert_eq!(wave.folding(), herald_types::Folding::Always);
    assert!(herald_types::EventKind::parse("like").is_some());
    assert!(c.kinds.0.contains_key("cfg_repost"));

    for (text, says) in [
        ("[kinds.x]\nnotify = [\"everyone\"]\n", "is not recipient"),
        (
            "[kinds.x]\nnotify = [\"followers\"]\n",
            "partition_by = \"actor\"",
        ),
        (
            "[kinds.x]\nnotify = [\"recipient\"]\nfold = \"sometimes\"\n",
            "fold",
        ),
        (
            "[kinds.x]\nnotify = [\"recipient\"]\ndefault_mode = \"loud\"\n",
            "default_mode",
        ),
        (
            "[kinds.x]\nnotify = [\"recipient\"]\ncolour = 1\n",
            "colour",
        ),
        (
            "[kinds.\"Bad Name\"]\nnotify = [\"recipient\"]\n",
            "Bad Name",
        ),
        (
            "[kinds.x]\nnotify = [\"recipient\"]\ngraph = \"follow\"\naliases = [\"like\"]\n",
            "built-in",
        ),
    ] {
        std::fs::write(&p, format!("[websocket]\ndev_mode = true\n{text}")).unwrap();
        let e = Config::load(&p, false, std::iter::empty(), &[]).unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains(says), "{text}: {e}");
    }
}
