use super::*;

#[test]
fn built_in_kinds_keep_their_names_codes_and_rules() {
    let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        ["like", "comment", "mention", "follow", "unfollow", "post"]
    );
    for (i, k) in EventKind::ALL.iter().enumerate() {
        assert_eq!(k.code(), Some(i as u8));
        assert_eq!(EventKind::from_code(i as u8), Some(*k));
        assert_eq!(EventKind::parse(k.as_str()), Some(*k));
    }
    assert!(EventKind::Like.needs_recipient() && !EventKind::Like.needs_mentions());
    assert!(EventKind::Mention.needs_mentions() && !EventKind::Mention.needs_recipient());
    assert!(EventKind::Comment.needs_recipient() && !EventKind::Comment.needs_mentions());
    assert!(EventKind::Unfollow.needs_recipient() && !EventKind::Unfollow.notifies());
    assert_eq!(EventKind::Follow.graph_change(), Some(true));
    assert_eq!(EventKind::Unfollow.graph_change(), Some(false));
    assert!(EventKind::Post.to_followers());
    assert_eq!(EventKind::Like.folding(), Folding::PerObject);
    assert_eq!(EventKind::Follow.folding(), Folding::Always);
    assert_eq!(EventKind::Post.folding(), Folding::Never);
    assert_eq!(EventKind::parse("repost_never_declared"), None);
}

#[test]
fn declared_kinds_are_found_by_name_and_stored_by_name() {
    let rules = KindRules {
        notify: Notify {
            recipient: true,
            followers: true,
            ..Notify::default()
        },
        folding: Folding::Never,
        default_mode: Some(DefaultMode::Digest),
        partition_by: PartitionBy::Actor,
        subscribe_actor: false,
        graph: None,
    };
    declare(&[("t_repost".into(), rules.clone())]).unwrap();
    let k = EventKind::parse("t_repost").unwrap();
    assert_eq!(k.as_str(), "t_repost");
    assert_eq!(k.rules(), &rules);
    assert_eq!(k.code(), None);
    assert!(k.to_followers() && k.needs_recipient());
    // Again, the same: fine; other rules: refused.
    declare(&[("t_repost".into(), rules.clone())]).unwrap();
    let mut other = rules.clone();
    other.folding = Folding::Always;
    assert_eq!(
        declare(&[("t_repost".into(), other)]),
        Err(KindError::Conflict("t_repost".into()))
    );
    // Followers need the actor's partition.
    let mut bad = rules;
    bad.partition_by = PartitionBy::Recipient;
    assert!(matches!(
        declare(&[("t_bad".into(), bad)]),
        Err(KindError::Rule(..))
    ));
    assert!(matches!(
        declare(&[("Bad Name".into(), KindRules::INERT)]),
        Err(KindError::Name(_))
    ));
}

#[test]
fn a_renamed_kind_reads_its_former_name_back_as_itself() {
    let rules = KindRules {
        notify: Notify {
            recipient: true,
            ..Notify::default()
        },
        ..KindRules::INERT
    };
    declare_with_aliases(&[("t_share".into(), rules, vec!["t_reshare".into()])]).unwrap();
    let k = EventKind::parse("t_share").unwrap();
    assert_eq!(EventKind::recall("t_reshare"), Some(k));
    assert_eq!(k.as_str(), "t_share");
    assert_eq!(
        EventKind::parse("t_reshare"),
        None,
        "not accepted in new events"
    );
}

#[test]
fn a_removed_kind_reads_back_under_its_name_and_notifies_nobody() {
    let k = EventKind::recall("t_gone").unwrap();
    assert_eq!(k.as_str(), "t_gone");
    assert!(!k.notifies());
    // Events of it are not accepted, nor can it be declared after.
    assert_eq!(EventKind::parse("t_gone"), None);
    assert_eq!(EventKind::recall("t_gone"), Some(k));
    let v: EventKind = serde_json::from_str("\"t_gone_too\"").unwrap();
    assert_eq!(v.as_str(), "t_gone_too");
    assert!(serde_json::from_str::<EventKind>("\"Not A Kind\"").is_err());
    assert_eq!(serde_json::to_string(&EventKind::Post).unwrap(), "\"post\"");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn any_rules() -> impl Strategy<Value = KindRules> {
        (
            any::<[bool; 4]>(),
            0..3u8,
            0..4u8,
            any::<bool>(),
            any::<bool>(),
            0..3u8,
        )
            .prop_map(|(n, f, d, actor, sub, g)| KindRules {
                notify: Notify {
                    recipient: n[0],
                    mentions: n[1],
                    followers: n[2],
                    subscribers: n[3],
                },
                folding: [Folding::PerObject, Folding::Always, Folding::Never][usize::from(f)],
                default_mode: [
                    None,
                    Some(DefaultMode::Realtime),
                    Some(DefaultMode::Digest),
                    Some(DefaultMode::Off),
                ][usize::from(d)],
                partition_by: if actor {
                    PartitionBy::Actor
                } else {
                    PartitionBy::Recipient
                },
                subscribe_actor: sub,
                graph: [None, Some(GraphChange::Follow), Some(GraphChange::Unfollow)]
                    [usize::from(g)],
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Any rules under any name: declared and read back the same,
        /// or refused with a reason; never a panic. What a declared
        /// kind requires follows from whom it tells.
        #[test]
        fn any_declaration_is_kept_or_refused(name in "[a-z_0-9A-Z ]{0,40}", rules in any_rules(), n in any::<u32>()) {
            let name = format!("{name}{n}");
            match declare(&[(name.clone(), rules.clone())]) {
                Ok(()) => {
                    let k = EventKind::parse(&name).expect("declared");
                    prop_assert_eq!(k.rules(), &rules);
                    prop_assert_eq!(k.as_str(), name.as_str());
                    prop_assert!(!k.needs_recipient() || rules.notify.recipient || rules.graph.is_some());
                    prop_assert_eq!(k.needs_object(), rules.notify.subscribers || rules.subscribe_actor);
                    if rules.notify.followers {
                        prop_assert_eq!(rules.partition_by, PartitionBy::Actor);
                    }
                    prop_assert_eq!(k.code(), None);
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }
}
