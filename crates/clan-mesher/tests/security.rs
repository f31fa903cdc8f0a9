//! The security matrix: every way a record, a peer or a frame can be wrong, one test each.
//! Records from the local API and from peers go through the same checks.

mod common;

use std::sync::atomic::Ordering;

use clan_mesher::record::unix_micros_now;
use clan_mesher::wire::{Request, Response};
use clan_mesher::{Certificate, PublishError, Record, RejectReason, SecretKey};
use common::*;

async fn rejected(net: &Net, record: Record, content: &[u8]) -> RejectReason {
    let node = net.spawn(0, &[]).await;
    let result = node
        .handle()
        .publish(record.clone(), content.to_vec())
        .await;
    let status = node.handle().status().await.unwrap();
    node.shutdown();
    node.join().await.unwrap();
    assert_eq!(status.files, 0, "a rejected record must not become visible");
    assert!(!net.content_path(0, record.name.as_str()).exists());
    match result {
        Err(PublishError::Rejected { reason, .. }) => {
            assert_eq!(status.metrics.rejected(reason), 1);
            reason
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn unsigned_upload_is_rejected() {
    let net = Net::new();
    let mut record = net.update("zone", b"z", unix_micros_now());
    record.signature = [0; 64];
    assert_eq!(
        rejected(&net, record, b"z").await,
        RejectReason::BadSignature
    );
}

#[tokio::test]
async fn wrong_signer_is_rejected() {
    let net = Net::new();
    let stranger = SecretKey::generate();
    let record = Record::sign_update(
        &stranger,
        net.policy.network,
        name("zone"),
        b"z",
        unix_micros_now(),
        None,
    );
    assert_eq!(rejected(&net, record, b"z").await, RejectReason::NotAllowed);
}

#[tokio::test]
async fn valid_signer_for_another_name_is_rejected() {
    let net = Net::new();
    let record = Record::sign_update(
        &net.admin,
        net.policy.network,
        name("not_listed"),
        b"z",
        unix_micros_now(),
        None,
    );
    assert_eq!(rejected(&net, record, b"z").await, RejectReason::NotAllowed);
}

#[tokio::test]
async fn replay_across_networks_is_rejected() {
    let net = Net::new();
    let other_network = SecretKey::generate().public();
    let record = Record::sign_update(
        &net.admin,
        other_network,
        name("zone"),
        b"z",
        unix_micros_now(),
        None,
    );
    assert_eq!(
        rejected(&net, record, b"z").await,
        RejectReason::WrongNetwork
    );
}

#[tokio::test]
async fn far_future_timestamp_is_rejected() {
    let net = Net::new();
    let record = net.update("zone", b"z", unix_micros_now() + 24 * 3600 * 1_000_000);
    assert_eq!(rejected(&net, record, b"z").await, RejectReason::FromFuture);
}

#[tokio::test]
async fn content_differing_from_the_signed_hash_or_size_is_rejected() {
    let net = Net::new();
    let record = net.update("zone", b"signed", unix_micros_now());
    assert_eq!(
        rejected(&net, record.clone(), b"forged").await,
        RejectReason::ContentMismatch
    );
    assert_eq!(
        rejected(&net, record, b"signed plus more").await,
        RejectReason::ContentMismatch
    );
}

#[tokio::test]
async fn replay_of_an_older_version_is_rejected_and_equal_times_pick_one_winner() {
    let net = Net::new();
    let node = net.spawn(0, &[]).await;
    let handle = node.handle();
    let now = unix_micros_now();
    let old = net.update("zone", b"old", now);
    handle.publish(old.clone(), b"old".to_vec()).await.unwrap();
    handle
        .publish(net.update("zone", b"new", now + 1), b"new".to_vec())
        .await
        .unwrap();
    let replay = handle.publish(old, b"old".to_vec()).await;
    assert!(matches!(
        replay,
        Err(PublishError::Rejected {
            reason: RejectReason::Stale,
            ..
        })
    ));
    assert!(has_content(&handle, "zone", b"new").await);

    let tie_a = net.update("file_0", b"a", now);
    let tie_b = net.update("file_0", b"b", now);
    let (winner, loser, winner_content) = if tie_a.supersedes(&tie_b) {
        (tie_a, tie_b, b"a")
    } else {
        (tie_b, tie_a, b"b")
    };
    handle
        .publish(winner.clone(), winner_content.to_vec())
        .await
        .unwrap();
    let loser_content = if winner_content == b"a" { b"b" } else { b"a" };
    assert!(handle.publish(loser, loser_content.to_vec()).await.is_err());
    assert!(has_content(&handle, "file_0", winner_content).await);
    node.shutdown();
    node.join().await.unwrap();
}

#[tokio::test]
async fn oversize_upload_is_refused_from_its_header() {
    use std::io::{Read, Write};
    let net = Net::new();
    let mut settings = net.settings(0, &[]);
    settings.http = vec!["127.0.0.1:0".parse().unwrap()];
    let node = clan_mesher::Mesher::spawn(settings).await.unwrap();
    let api =
        std::fs::read_to_string(net.state_dir(0).join(clan_mesher::API_ADDRESS_FILE)).unwrap();
    let api: std::net::SocketAddr = api.trim().parse().unwrap();
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(api).unwrap();
        stream
            .write_all(b"POST /v1/files HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let bad_name = tokio::task::spawn_blocking(move || {
        clan_mesher::http::call(api, "GET", "/v1/files/../etc/passwd", b"")
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(bad_name.0, 400);
    node.shutdown();
    node.join().await.unwrap();
}

/// A node with one file, and its address.
async fn node_with_zone(net: &Net) -> (clan_mesher::Mesher, libp2p::Multiaddr) {
    let node = net.spawn(0, &[]).await;
    node.handle()
        .publish(
            net.update("zone", b"secret zone", unix_micros_now()),
            b"secret zone".to_vec(),
        )
        .await
        .unwrap();
    let address = address(&node.handle()).await;
    (node, address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_without_a_valid_certificate_gets_no_index_and_no_content() {
    let net = Net::new();
    let (node, address) = node_with_zone(&net).await;
    let handle = node.handle();
    let digest = frame(&Request::Digest(Default::default()).encode());
    let zone_digest = handle.get(&name("zone")).await.unwrap().0.digest();
    let fetch = frame(
        &Request::Fetch {
            name: name("zone"),
            digest: zone_digest,
        }
        .encode(),
    );

    let silent = Adversary::connect(
        &SecretKey::generate(),
        address.clone(),
        Box::new(|_| Vec::new()),
    )
    .await;
    for request in [digest.clone(), fetch.clone()] {
        let answer = silent.request(request).await.unwrap();
        assert_eq!(
            Response::decode(&answer[4..]),
            Ok(Response::Refused(RejectReason::UnverifiedPeer))
        );
    }

    let outsider_network = SecretKey::generate();
    let outsider = SecretKey::generate();
    let foreign = Certificate::sign(&outsider_network, outsider.public(), 0, None);
    let key_of_another_node =
        Certificate::sign(&net.network_key, net.identity(5).public(), 0, None);
    for (key, certificate) in [
        (outsider, foreign),
        (SecretKey::generate(), key_of_another_node),
    ] {
        let adversary = Adversary::connect(
            &key,
            address.clone(),
            member_responder(certificate.clone(), |_| Vec::new()),
        )
        .await;
        let hello = adversary
            .request(frame(&Request::Hello(certificate).encode()))
            .await;
        let refused = hello.as_ref().is_ok_and(|a| {
            Response::decode(&a[4..]) == Ok(Response::Refused(RejectReason::BadCertificate))
        });
        assert!(refused || hello.is_err(), "{hello:?}");
        for request in [digest.clone(), fetch.clone()] {
            let answer = adversary.request(request).await;
            assert!(
                answer.is_err()
                    || answer.is_ok_and(|a| !a.windows(11).any(|w| w == b"secret zone"))
            );
        }
        eventually("adversary disconnected", || async {
            adversary.disconnected.load(Ordering::SeqCst)
        })
        .await;
    }
    let status = handle.status().await.unwrap();
    assert!(status.peers.is_empty());
    assert!(status.metrics.rejected(RejectReason::UnverifiedPeer) >= 2);
    assert!(status.metrics.rejected(RejectReason::BadCertificate) >= 2);
    assert_eq!(
        status.metrics.bytes(
            clan_mesher::metrics::Direction::Sent,
            &["nodes", "content", "in_sync"]
        ),
        0
    );
    node.shutdown();
    node.join().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_serving_content_that_differs_from_the_signed_record_is_not_trusted_again() {
    let net = Net::new();
    let victim = net.spawn(0, &[]).await;
    let victim_address = address(&victim.handle()).await;
    let record = net.update("zone", b"the real zone", unix_micros_now());
    for forged in [b"the fake zone".to_vec(), b"the real zone, longer".to_vec()] {
        let key = SecretKey::generate();
        let respond_with = forged.clone();
        let adversary = Adversary::connect(
            &key,
            victim_address.clone(),
            member_responder(net.certificate(&key), move |_| {
                frame(&Response::Content(respond_with.clone()).encode())
            }),
        )
        .await;
        let handle = victim.handle();
        eventually("adversary verified", || async {
            handle.status().await.unwrap().peers.len() == 1
        })
        .await;
        adversary
            .request(frame(&Request::Announce(record.clone()).encode()))
            .await
            .unwrap();
        eventually("liar disconnected", || async {
            adversary.disconnected.load(Ordering::SeqCst)
        })
        .await;
        assert!(handle.get(&name("zone")).await.is_none());
        // The liar is not served again, even on a new connection.
        let again = Adversary::connect(
            &key,
            victim_address.clone(),
            member_responder(net.certificate(&key), |_| Vec::new()),
        )
        .await;
        let answer = again
            .request(frame(&Request::Digest(Default::default()).encode()))
            .await;
        assert!(
            answer.is_err()
                || Response::decode(&answer.unwrap()[4..])
                    == Ok(Response::Refused(RejectReason::UnverifiedPeer))
        );
    }
    let status = victim.handle().status().await.unwrap();
    assert_eq!(status.metrics.rejected(RejectReason::ContentMismatch), 2);

    // An honest peer that has the content still delivers it.
    let honest = net.spawn(1, std::slice::from_ref(&victim_address)).await;
    honest
        .handle()
        .publish(record, b"the real zone".to_vec())
        .await
        .unwrap();
    let handle = victim.handle();
    eventually("victim got the real zone", || {
        has_content(&handle, "zone", b"the real zone")
    })
    .await;
    for node in [victim, honest] {
        node.shutdown();
        node.join().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_content_is_rejected_while_streaming() {
    let net = Net::new();
    let victim = net.spawn(0, &[]).await;
    let victim_address = address(&victim.handle()).await;
    let key = SecretKey::generate();
    let adversary = Adversary::connect(
        &key,
        victim_address,
        member_responder(net.certificate(&key), |request| match request {
            Request::Fetch { .. } => {
                // Claims 4 GiB, then starts sending.
                let mut answer = u32::MAX.to_be_bytes().to_vec();
                answer.extend(std::iter::repeat_n(0x55, 1024 * 1024));
                answer
            }
            _ => frame(&Response::InSync.encode()),
        }),
    )
    .await;
    let handle = victim.handle();
    eventually("adversary verified", || async {
        handle.status().await.unwrap().peers.len() == 1
    })
    .await;
    let record = net.update("zone", b"small", unix_micros_now());
    adversary
        .request(frame(&Request::Announce(record).encode()))
        .await
        .unwrap();
    eventually("adversary disconnected", || async {
        adversary.disconnected.load(Ordering::SeqCst)
    })
    .await;
    let status = handle.status().await.unwrap();
    assert_eq!(status.files, 0);
    assert!(status.metrics.rejected(RejectReason::Malformed) >= 1);
    victim.shutdown();
    victim.join().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_truncated_and_badly_named_frames_do_not_hurt_the_node() {
    let net = Net::new();
    let (node, address) = node_with_zone(&net).await;
    let handle = node.handle();
    let valid = net.update("zone", b"x", unix_micros_now() + 1);
    let announce = Request::Announce(valid.clone()).encode();
    let name_at = 1 + 1 + 32; // request tag, record kind, network
    let with_name = |bad: &[u8]| {
        let mut payload = announce[..name_at].to_vec();
        payload.extend_from_slice(&(bad.len() as u16).to_be_bytes());
        payload.extend_from_slice(bad);
        payload.extend_from_slice(&announce[name_at + 2 + 4..]);
        frame(&payload)
    };
    let long = vec![b'a'; 256];
    let truncated = [vec![0, 0, 1], frame(&announce)[..40].to_vec()];
    let mut invalid: Vec<Vec<u8>> = vec![
        vec![0xff, 0xff, 0xff, 0xff],
        [0xff, 0xff, 0xff, 0xff, 1, 2, 3].to_vec(),
        frame(&[99, 1, 2, 3]),
        frame(&[]),
        frame(&[4, 0xff, 0xff, 0xff, 0xff]),
    ];
    for bad in [&b".."[..], b"/zone", b"Zone", b"zo\0ne", b"a//b", &long] {
        invalid.push(with_name(bad));
    }
    let invalid_count = invalid.len();
    let cases: Vec<Vec<u8>> = truncated.into_iter().chain(invalid).collect();
    for case in cases {
        let key = SecretKey::generate();
        let adversary = Adversary::connect(
            &key,
            address.clone(),
            member_responder(net.certificate(&key), |_| Vec::new()),
        )
        .await;
        eventually("adversary verified", || async {
            handle
                .status()
                .await
                .unwrap()
                .peers
                .contains(&adversary.peer_id)
        })
        .await;
        let answer = adversary.request(case.clone()).await;
        assert!(
            answer.is_err() || answer.as_ref().is_ok_and(Vec::is_empty),
            "{case:?} got {answer:?}"
        );
    }
    assert!(
        has_content(&handle, "zone", b"secret zone").await,
        "the node's state is untouched"
    );
    let files = files_under(&net.state_dir(0).join("files"));
    assert_eq!(
        files,
        vec![net.content_path(0, "zone")],
        "nothing was written outside the known file"
    );
    let malformed = handle
        .status()
        .await
        .unwrap()
        .metrics
        .rejected(RejectReason::Malformed);
    assert_eq!(
        malformed, invalid_count as u64,
        "every invalid frame is counted, truncation is not"
    );
    node.shutdown();
    node.join().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_announcements_from_one_peer_leaves_honest_nodes_responsive() {
    let net = Net::new();
    let a = net.spawn(0, &[]).await;
    let a_address = address(&a.handle()).await;
    let b = net.spawn(1, std::slice::from_ref(&a_address)).await;
    let key = SecretKey::generate();
    let flooder = Adversary::connect(
        &key,
        a_address,
        member_responder(net.certificate(&key), |_| Vec::new()),
    )
    .await;
    let a_handle = a.handle();
    eventually("flooder verified", || async {
        a_handle.status().await.unwrap().peers.len() == 2
    })
    .await;
    let stranger = SecretKey::generate();
    let now = unix_micros_now();
    let flood = tokio::spawn(async move {
        for i in 0..20_000u64 {
            let record = Record::sign_update(
                &stranger,
                net_id(&key),
                name("zone"),
                b"spam",
                now + i,
                None,
            );
            flooder
                .fire(frame(&Request::Announce(record).encode()))
                .await;
        }
        flooder
    });
    b.handle()
        .publish(
            net.update("file_9", b"honest", unix_micros_now()),
            b"honest".to_vec(),
        )
        .await
        .unwrap();
    eventually("honest update reached a during the flood", || {
        has_content(&a_handle, "file_9", b"honest")
    })
    .await;
    let flooder = flood.await.unwrap();
    let status = a_handle.status().await.unwrap();
    assert!(
        status.metrics.rejected(RejectReason::WrongNetwork)
            + status.metrics.rejected(RejectReason::RateLimited)
            > 0
    );
    drop(flooder);
    for node in [a, b] {
        node.shutdown();
        node.join().await.unwrap();
    }
}

/// The flood uses the wrong network id on purpose: cheap to check, never accepted.
fn net_id(key: &SecretKey) -> clan_mesher::NetworkId {
    key.public()
}
