//! Property: whatever bytes go in come out again for every recipient, through the bytes of
//! the file; nobody else can decrypt; re-keying keeps the value.

use clan_secrets::{Identities, Recipient, SopsFile};
use proptest::prelude::*;

fn identities(count: usize) -> Vec<(Identities, Recipient)> {
    (0..count)
        .map(|_| {
            let identity = age::x25519::Identity::generate();
            let recipient: Recipient = identity.to_public().to_string().parse().unwrap();
            let mut identities = Identities::default();
            identities.push(identity);
            (identities, recipient)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn encrypt_then_decrypt_roundtrips(plaintext in proptest::collection::vec(any::<u8>(), 0..4096), count in 1usize..4) {
        let people = identities(count + 1);
        let (outsider, recipients) = people.split_last().unwrap();
        let recipients: Vec<Recipient> = recipients.iter().map(|(_, r)| r.clone()).collect();
        let bytes = clan_secrets::encrypt(&plaintext, &recipients).unwrap().to_bytes();
        for (ids, _) in &people[..count] {
            let decrypted = clan_secrets::decrypt(&bytes, ids).unwrap();
            prop_assert_eq!(decrypted.expose(), &plaintext[..]);
        }
        prop_assert!(clan_secrets::decrypt(&bytes, &outsider.0).is_err());
        let reparsed = SopsFile::parse(&bytes).unwrap();
        prop_assert_eq!(reparsed.to_bytes(), bytes.clone());

        // Re-key to the outsider only: the value stays, the old recipients lose access.
        let mut file = reparsed;
        prop_assert!(file.set_recipients(std::slice::from_ref(&outsider.1), &people[0].0).unwrap());
        let rekeyed = file.to_bytes();
        let decrypted = clan_secrets::decrypt(&rekeyed, &outsider.0).unwrap();
        prop_assert_eq!(decrypted.expose(), &plaintext[..]);
        prop_assert!(clan_secrets::decrypt(&rekeyed, &people[0].0).is_err());
    }

    #[test]
    fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = SopsFile::parse(&bytes);
    }
}

#[test]
fn decrypt_many_keeps_order_and_reports_each_failure() {
    let people = identities(2);
    let files: Vec<Vec<u8>> = (0..37)
        .map(|i| {
            let recipient = &people[i % 2].1;
            clan_secrets::encrypt(
                format!("value {i}").as_bytes(),
                std::slice::from_ref(recipient),
            )
            .unwrap()
            .to_bytes()
        })
        .collect();
    let results = clan_secrets::decrypt_many(&files, &people[0].0);
    assert_eq!(results.len(), 37);
    for (i, result) in results.iter().enumerate() {
        match result {
            Ok(plaintext) => {
                assert_eq!(i % 2, 0);
                assert_eq!(plaintext.expose(), format!("value {i}").as_bytes());
            }
            Err(error) => {
                assert_eq!(i % 2, 1);
                assert!(matches!(
                    error,
                    clan_secrets::SopsError::NotARecipient { .. }
                ));
            }
        }
    }
}
