//! Replication between nodes in one process on loopback: fan-out, catch-up, partitions,
//! restarts, deletion, expiry and signed namespaces.

mod common;

use clan_mesher::record::unix_micros_now;
use clan_mesher::{Record, RejectReason};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_reaches_all_ten_nodes_and_lands_on_disk() {
    let net = Net::new();
    let first = net.spawn(0, &[]).await;
    let seed = address(&first.handle()).await;
    let mut nodes = vec![first];
    for i in 1..10 {
        nodes.push(net.spawn(i, std::slice::from_ref(&seed)).await);
    }
    let record = net.update("zone", b"example.org. IN A 10.0.0.1", unix_micros_now());
    nodes[7]
        .handle()
        .publish(record, b"example.org. IN A 10.0.0.1".to_vec())
        .await
        .unwrap();
    for (i, node) in nodes.iter().enumerate() {
        let handle = node.handle();
        eventually(&format!("node {i} has the zone"), || {
            has_content(&handle, "zone", b"example.org. IN A 10.0.0.1")
        })
        .await;
        assert_eq!(
            std::fs::read(net.content_path(i, "zone")).unwrap(),
            b"example.org. IN A 10.0.0.1"
        );
    }
    for node in nodes {
        node.shutdown();
        node.join().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_node_catches_up_with_one_fetch_per_changed_file() {
    let net = Net::new();
    let a = net.spawn(0, &[]).await;
    let seed = address(&a.handle()).await;
    let b = net.spawn(1, std::slice::from_ref(&seed)).await;
    let c = net.spawn(2, std::slice::from_ref(&seed)).await;
    let start = unix_micros_now();
    for i in 0..50 {
        let content = format!("unchanged {i}");
        a.handle()
            .publish(
                net.update(&format!("file_{i}"), content.as_bytes(), start),
                content.into_bytes(),
            )
            .await
            .unwrap();
    }
    let c_handle = c.handle();
    eventually("c has the first 50 files", || async {
        c_handle.list().await.len() == 50
    })
    .await;
    c.shutdown();
    c.join().await.unwrap();

    // 100 updates spread over 20 files (five versions each) while c is down.
    for round in 0..5u64 {
        for i in 100..120 {
            let content = format!("file {i} version {round}");
            let record = net.update(&format!("file_{i}"), content.as_bytes(), start + 1 + round);
            b.handle()
                .publish(record, content.into_bytes())
                .await
                .unwrap();
        }
    }
    let (a_handle, b_handle) = (a.handle(), b.handle());
    eventually("a has every update", || async {
        a_handle.status().await.unwrap().root == b_handle.status().await.unwrap().root
    })
    .await;
    let a_root = a_handle.status().await.unwrap().root;
    let c = net.spawn(2, std::slice::from_ref(&seed)).await;
    let c_handle = c.handle();
    eventually("c caught up", || async {
        c_handle.status().await.unwrap().root == a_root
    })
    .await;
    assert!(has_content(&c_handle, "file_119", b"file 119 version 4").await);
    let status = c_handle.status().await.unwrap();
    assert_eq!(status.files, 70);
    assert_eq!(
        status.metrics.fetches, 20,
        "one fetch per changed file, nothing for unchanged ones"
    );
    for node in [a, b, c] {
        node.shutdown();
        node.join().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_with_writes_on_both_sides_converges_to_one_winner() {
    let net = Net::new();
    let left_seed_node = net.spawn(0, &[]).await;
    let left_seed = address(&left_seed_node.handle()).await;
    let right_seed_node = net.spawn(3, &[]).await;
    let right_seed = address(&right_seed_node.handle()).await;
    let mut nodes = vec![left_seed_node];
    for i in 1..3 {
        nodes.push(net.spawn(i, std::slice::from_ref(&left_seed)).await);
    }
    nodes.push(right_seed_node);
    for i in 4..6 {
        nodes.push(net.spawn(i, std::slice::from_ref(&right_seed)).await);
    }
    let t = unix_micros_now();
    let writes: [(usize, &str, &[u8], u64); 6] = [
        (1, "file_0", b"left only", t),
        (4, "file_1", b"right only", t),
        (2, "file_2", b"left older", t),
        (5, "file_2", b"right newer", t + 10),
        (0, "file_3", b"left tie", t + 20),
        (3, "file_3", b"right tie", t + 20),
    ];
    for (node, file, content, at) in writes {
        nodes[node]
            .handle()
            .publish(net.update(file, content, at), content.to_vec())
            .await
            .unwrap();
    }
    let left_handle = nodes[2].handle();
    eventually("left side agrees", || async {
        left_handle.list().await.len() == 3
    })
    .await;
    assert!(
        has_content(&left_handle, "file_2", b"left older").await,
        "the partition must hold until healed"
    );

    nodes[1].handle().dial(right_seed.clone()).await;

    let tie_a = net.update("file_3", b"left tie", t + 20);
    let tie_b = net.update("file_3", b"right tie", t + 20);
    let tie_winner: &[u8] = if tie_a.supersedes(&tie_b) {
        b"left tie"
    } else {
        b"right tie"
    };
    let first = nodes[0].handle();
    for (i, node) in nodes.iter().enumerate() {
        let handle = node.handle();
        eventually(&format!("node {i} converged"), || async {
            has_content(&handle, "file_0", b"left only").await
                && has_content(&handle, "file_1", b"right only").await
                && has_content(&handle, "file_2", b"right newer").await
                && has_content(&handle, "file_3", tie_winner).await
        })
        .await;
    }
    let root = first.status().await.unwrap().root;
    for node in &nodes {
        assert_eq!(node.handle().status().await.unwrap().root, root);
    }
    for node in nodes {
        node.shutdown();
        node.join().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_persisted_state_downloads_nothing() {
    let net = Net::new();
    let a = net.spawn(0, &[]).await;
    let seed = address(&a.handle()).await;
    let b = net.spawn(1, std::slice::from_ref(&seed)).await;
    let now = unix_micros_now();
    for i in 0..30 {
        let content = vec![i as u8; 1000];
        a.handle()
            .publish(net.update(&format!("file_{i}"), &content, now), content)
            .await
            .unwrap();
    }
    let b_handle = b.handle();
    eventually("b has all files", || async {
        b_handle.list().await.len() == 30
    })
    .await;
    b.shutdown();
    b.join().await.unwrap();

    let b = net.spawn(1, std::slice::from_ref(&seed)).await;
    let b_handle = b.handle();
    eventually("b reconnected and compared", || async {
        let status = b_handle.status().await.unwrap();
        !status.peers.is_empty()
            && status
                .metrics
                .bytes(clan_mesher::metrics::Direction::Received, &["in_sync"])
                > 0
    })
    .await;
    let status = b_handle.status().await.unwrap();
    assert_eq!(status.files, 30);
    assert_eq!(status.metrics.fetches, 0);
    assert_eq!(
        status.metrics.bytes(
            clan_mesher::metrics::Direction::Received,
            &["content", "announce"]
        ),
        0
    );
    for node in [a, b] {
        node.shutdown();
        node.join().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_delete_and_expired_files_disappear_everywhere() {
    let net = Net::new();
    let a = net.spawn(0, &[]).await;
    let seed = address(&a.handle()).await;
    let b = net.spawn(1, std::slice::from_ref(&seed)).await;
    let now = unix_micros_now();
    a.handle()
        .publish(net.update("file_0", b"doomed", now), b"doomed".to_vec())
        .await
        .unwrap();
    let short_lived = Record::sign_update(
        &net.admin,
        net.policy.network,
        name("file_1"),
        b"brief",
        now,
        Some(now + 2_000_000),
    );
    a.handle()
        .publish(short_lived.clone(), b"brief".to_vec())
        .await
        .unwrap();
    let b_handle = b.handle();
    eventually("b has both", || async {
        has_content(&b_handle, "file_0", b"doomed").await
            && has_content(&b_handle, "file_1", b"brief").await
    })
    .await;

    let tombstone = Record::sign_tombstone(&net.admin, net.policy.network, name("file_0"), now + 1);
    a.handle().publish(tombstone, Vec::new()).await.unwrap();
    eventually("deleted on b", || async {
        b_handle.get(&name("file_0")).await.is_none()
    })
    .await;
    assert!(!net.content_path(1, "file_0").exists());
    let resurrect = net.update("file_0", b"doomed", now);
    assert!(
        b_handle
            .publish(resurrect, b"doomed".to_vec())
            .await
            .is_err(),
        "older version came back"
    );

    eventually("expired on both", || async {
        a.handle().get(&name("file_1")).await.is_none()
            && b_handle.get(&name("file_1")).await.is_none()
    })
    .await;
    assert!(!net.content_path(0, "file_1").exists() && !net.content_path(1, "file_1").exists());
    let error = b_handle
        .publish(short_lived, b"brief".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        clan_mesher::PublishError::Rejected {
            reason: RejectReason::Expired,
            ..
        }
    ));
    for node in [a, b] {
        node.shutdown();
        node.join().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_publish_facts_in_their_own_namespace_only() {
    let net = Net::new();
    let a = net.spawn(0, &[]).await;
    let seed = address(&a.handle()).await;
    let b = net.spawn(1, std::slice::from_ref(&seed)).await;
    let b_key = net.identity(1);
    let own = format!("facts/{}", b_key.public().to_hex());
    let fact = Record::sign_update(
        &b_key,
        net.policy.network,
        name(&own),
        b"ssh-ed25519 AAAA",
        unix_micros_now(),
        None,
    )
    .with_certificate(net.certificate(&b_key));
    b.handle()
        .publish(fact, b"ssh-ed25519 AAAA".to_vec())
        .await
        .unwrap();
    let a_handle = a.handle();
    eventually("a has b's fact", || {
        has_content(&a_handle, &own, b"ssh-ed25519 AAAA")
    })
    .await;

    let a_key = net.identity(0);
    let forged = Record::sign_update(
        &a_key,
        net.policy.network,
        name(&own),
        b"evil",
        unix_micros_now() + 1,
        None,
    )
    .with_certificate(net.certificate(&a_key));
    let error = a_handle
        .publish(forged, b"evil".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        clan_mesher::PublishError::Rejected {
            reason: RejectReason::NotAllowed,
            ..
        }
    ));
    assert!(has_content(&a_handle, &own, b"ssh-ed25519 AAAA").await);
    for node in [a, b] {
        node.shutdown();
        node.join().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_updates_reaches_every_node_without_losing_peers() {
    let net = Net::new();
    let a = net.spawn(0, &[]).await;
    let seed = address(&a.handle()).await;
    let others = [
        net.spawn(1, std::slice::from_ref(&seed)).await,
        net.spawn(2, std::slice::from_ref(&seed)).await,
    ];
    let a_handle = a.handle();
    eventually("both peers connected", || async {
        a_handle.status().await.unwrap().peers.len() == 2
    })
    .await;
    let now = unix_micros_now();
    // More announcements at once than libp2p allows streams per connection.
    for i in 0..200 {
        let content = format!("burst {i}");
        a_handle
            .publish(
                net.update(&format!("file_{i}"), content.as_bytes(), now),
                content.into_bytes(),
            )
            .await
            .unwrap();
    }
    for node in &others {
        let handle = node.handle();
        eventually("all 200 files arrived", || async {
            handle.status().await.unwrap().files == 200
        })
        .await;
        let status = handle.status().await.unwrap();
        assert_eq!(status.metrics.rejected(RejectReason::Malformed), 0);
        assert_eq!(status.metrics.fetches, 200, "one fetch per file");
    }
    assert_eq!(
        a_handle.status().await.unwrap().peers.len(),
        2,
        "no honest peer was disconnected"
    );
    for node in others.into_iter().chain([a]) {
        node.shutdown();
        node.join().await.unwrap();
    }
}
