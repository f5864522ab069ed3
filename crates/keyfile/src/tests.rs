//! Byte-exact test vectors for the key file. Each DER vector was written by hand and checked
//! with `openssl asn1parse -inform DER -i`.

use crate::{handle, Error, KeyType, TpmAuthPolicy, TpmKey, TpmPolicy};

/// Bytes from hex pairs; whitespace is ignored.
fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert_eq!(digits.len() % 2, 0, "odd number of hex digits");
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).unwrap();
            u8::from_str_radix(pair, 16).unwrap()
        })
        .collect()
}

const PUBKEY: [u8; 4] = [0x00, 0x02, 0xAA, 0xBB];
const PRIVKEY: [u8; 5] = [0x00, 0x03, 0x01, 0x02, 0x03];

/// A loadable key with no optional fields but emptyAuth, parent owner. emptyAuth is always
/// written, here as an explicit FALSE: tpm2-openssl reads an absent one as TRUE.
fn minimal_der() -> Vec<u8> {
    hex(concat!(
        "30 20",                   // TPMKey SEQUENCE, 32 bytes
        "06 06 67 81 05 0A 01 03", // type: 2.23.133.10.1.3, loadable
        "A0 03 01 01 00",          // emptyAuth [0] explicit FALSE
        "02 04 40 00 00 01",       // parent: 0x40000001
        "04 04 00 02 AA BB",       // pubkey
        "04 05 00 03 01 02 03",    // privkey
    ))
}

/// [`minimal_der`] with emptyAuth left out, as the draft allows and older writers did.
fn minimal_der_without_empty_auth() -> Vec<u8> {
    hex(concat!(
        "30 1B",                   // TPMKey SEQUENCE, 27 bytes
        "06 06 67 81 05 0A 01 03", // type: 2.23.133.10.1.3, loadable
        "02 04 40 00 00 01",       // parent: 0x40000001
        "04 04 00 02 AA BB",       // pubkey
        "04 05 00 03 01 02 03",    // privkey
    ))
}

fn minimal_key() -> TpmKey {
    TpmKey::new_loadable(handle::OWNER, PUBKEY.to_vec(), PRIVKEY.to_vec(), false)
}

/// An importable key with every optional field.
fn full_der() -> Vec<u8> {
    hex(concat!(
        "30 81 86",                    // TPMKey SEQUENCE, 134 bytes (long-form length)
        "06 06 67 81 05 0A 01 04",     // type: 2.23.133.10.1.4, importable
        "A0 03 01 01 FF",              // emptyAuth [0] TRUE
        "A1 1E 30 1C",                 // policy [1], SEQUENCE OF 2 TPMPolicy
        "  30 0E",                     //   TPMPolicy
        "    A0 04 02 02 01 7F",       //     commandCode [0] 0x17F (TPM2_PolicyPCR)
        "    A1 06 04 04 DE AD BE EF", //     commandPolicy [1]
        "  30 0A",                     //   TPMPolicy
        "    A0 04 02 02 01 6B",       //     commandCode [0] 0x16B (TPM2_PolicyAuthValue)
        "    A1 02 04 00",             //     commandPolicy [1], empty
        "A2 05 04 03 01 02 03",        // secret [2]
        "A3 2D 30 2B",                 // authPolicy [3], SEQUENCE OF 2 TPMAuthPolicy
        "  30 17",                     //   TPMAuthPolicy
        "    A0 05 0C 03 70 69 6E",    //     name [0] "pin"
        "    A1 0E 30 0C",             //     policy [1], SEQUENCE OF 1 TPMPolicy
        "      30 0A A0 04 02 02 01 6B A1 02 04 00", // TPM2_PolicyAuthValue
        "  30 10",                     //   TPMAuthPolicy without a name
        "    A1 0E 30 0C",             //     policy [1], SEQUENCE OF 1 TPMPolicy
        "      30 0A A0 04 02 02 01 6B A1 02 04 00", // TPM2_PolicyAuthValue
        "A4 09 0C 07 73 73 68 20 6B 65 79", // description [4] "ssh key"
        "A5 03 01 01 FF",              // rsaParent [5] TRUE
        "02 04 40 00 00 01",           // parent: 0x40000001
        "04 04 00 02 AA BB",           // pubkey
        "04 05 00 03 01 02 03",        // privkey
    ))
}

fn auth_value_policy() -> TpmPolicy {
    TpmPolicy {
        command_code: 0x16B,
        command_policy: vec![],
    }
}

fn full_key() -> TpmKey {
    TpmKey {
        key_type: KeyType::Importable,
        empty_auth: true,
        policy: vec![
            TpmPolicy {
                command_code: 0x17F,
                command_policy: vec![0xDE, 0xAD, 0xBE, 0xEF],
            },
            auth_value_policy(),
        ],
        secret: Some(vec![1, 2, 3]),
        auth_policy: vec![
            TpmAuthPolicy {
                name: Some("pin".to_owned()),
                policy: vec![auth_value_policy()],
            },
            TpmAuthPolicy {
                name: None,
                policy: vec![auth_value_policy()],
            },
        ],
        description: Some("ssh key".to_owned()),
        rsa_parent: true,
        parent: handle::OWNER,
        pubkey: PUBKEY.to_vec(),
        privkey: PRIVKEY.to_vec(),
    }
}

/// Asserts that `der` decodes to `key` and that `key` encodes back to `der` exactly.
fn assert_round_trip(der: &[u8], key: &TpmKey) {
    assert_eq!(TpmKey::from_der(der).as_ref(), Ok(key));
    assert_eq!(key.to_der(), der);
}

#[test]
fn minimal_loadable_key_round_trips() {
    assert_round_trip(&minimal_der(), &minimal_key());
}

#[test]
fn key_with_every_field_round_trips() {
    assert_round_trip(&full_der(), &full_key());
}

#[test]
fn persistent_parent_gets_a_leading_zero() {
    let der = hex(concat!(
        "30 21",                   // TPMKey SEQUENCE, 33 bytes
        "06 06 67 81 05 0A 01 03", // type: loadable
        "A0 03 01 01 FF",          // emptyAuth [0] TRUE
        "02 05 00 81 00 00 01",    // parent: 0x81000001, 00 keeps it positive
        "04 04 00 02 AA BB",       // pubkey
        "04 05 00 03 01 02 03",    // privkey
    ));
    let key = TpmKey::new_loadable(0x8100_0001, PUBKEY.to_vec(), PRIVKEY.to_vec(), true);
    assert_round_trip(&der, &key);
}

#[test]
fn owner_parent_has_no_leading_zero() {
    let der = hex(concat!(
        "30 20",                   // TPMKey SEQUENCE, 32 bytes
        "06 06 67 81 05 0A 01 03", // type: loadable
        "A0 03 01 01 FF",          // emptyAuth [0] TRUE
        "02 04 40 00 00 01",       // parent: 0x40000001
        "04 04 00 02 AA BB",       // pubkey
        "04 05 00 03 01 02 03",    // privkey
    ));
    let key = TpmKey::new_loadable(handle::OWNER, PUBKEY.to_vec(), PRIVKEY.to_vec(), true);
    assert_round_trip(&der, &key);
}

#[test]
fn lenient_input_is_rewritten_as_strict_der() {
    let lenient = hex(concat!(
        "30 81 28",                   // TPMKey SEQUENCE, 40 bytes, non-minimal length
        "06 06 67 81 05 0A 01 03",    // type: loadable
        "A0 03 01 01 01",             // emptyAuth [0] TRUE written as 01 (tpm2-openssl)
        "A5 03 01 01 00",             // rsaParent [5] explicit FALSE
        "02 04 40 00 00 01",          // parent: 0x40000001
        "04 81 04 00 02 AA BB",       // pubkey, non-minimal length 81 04
        "04 82 00 05 00 03 01 02 03", // privkey, non-minimal length 82 00 05
    ));
    let strict = hex(concat!(
        "30 20",                   // TPMKey SEQUENCE, 32 bytes
        "06 06 67 81 05 0A 01 03", // type: loadable
        "A0 03 01 01 FF",          // emptyAuth [0] TRUE as FF; rsaParent left out
        "02 04 40 00 00 01",       // parent: 0x40000001
        "04 04 00 02 AA BB",       // pubkey
        "04 05 00 03 01 02 03",    // privkey
    ));
    let key = TpmKey::from_der(&lenient).unwrap();
    assert_eq!(
        key,
        TpmKey::new_loadable(handle::OWNER, PUBKEY.to_vec(), PRIVKEY.to_vec(), true)
    );
    assert_eq!(key.to_der(), strict);
}

#[test]
fn empty_auth_false_is_written_explicitly() {
    // Right after the type OID, whatever else the key has.
    assert_eq!(minimal_key().to_der()[10..15], hex("A0 03 01 01 00"));

    let key = TpmKey {
        empty_auth: false,
        ..full_key()
    };
    let mut der = full_der();
    assert_eq!(der[11..16], hex("A0 03 01 01 FF")); // emptyAuth [0] TRUE, after a 3-byte header
    der[15] = 0x00; // emptyAuth [0] explicit FALSE; nothing else changes
    assert_eq!(key.to_der()[11..16], hex("A0 03 01 01 00"));
    assert_round_trip(&der, &key);
}

#[test]
fn absent_empty_auth_is_read_as_false_and_written_explicitly() {
    let key = TpmKey::from_der(&minimal_der_without_empty_auth()).unwrap();
    assert_eq!(key, minimal_key());
    assert_eq!(key.to_der(), minimal_der());
}

#[test]
fn empty_lists_are_left_out_on_write_but_false_empty_auth_is_kept() {
    let lenient = hex(concat!(
        "30 28",                   // TPMKey SEQUENCE, 40 bytes
        "06 06 67 81 05 0A 01 03", // type: loadable
        "A0 03 01 01 00",          // emptyAuth [0] explicit FALSE
        "A1 02 30 00",             // policy [1], empty SEQUENCE OF
        "A3 02 30 00",             // authPolicy [3], empty SEQUENCE OF
        "02 04 40 00 00 01",       // parent: 0x40000001
        "04 04 00 02 AA BB",       // pubkey
        "04 05 00 03 01 02 03",    // privkey
    ));
    let key = TpmKey::from_der(&lenient).unwrap();
    assert_eq!(key, minimal_key());
    // The same bytes without the two empty lists: emptyAuth [0] FALSE stays.
    assert_eq!(key.to_der(), minimal_der());
}

#[test]
fn negative_and_padded_parents_are_read() {
    // 32-bit tpm2-tss-engine wrote parent 0x81000001 as the INTEGER -0x7EFFFFFF.
    let negative = hex(concat!(
        "30 1B",                   // TPMKey SEQUENCE, 27 bytes
        "06 06 67 81 05 0A 01 03", // type: loadable
        "02 04 81 00 00 01",       // parent: -0x7EFFFFFF
        "04 04 00 02 AA BB",       // pubkey
        "04 05 00 03 01 02 03",    // privkey
    ));
    let key = TpmKey::from_der(&negative).unwrap();
    assert_eq!(key.parent, 0x8100_0001);
    // Rewritten after emptyAuth [0] FALSE (bytes 10..15) as a positive INTEGER.
    assert_eq!(key.to_der()[15..22], hex("02 05 00 81 00 00 01"));

    let padded = hex(concat!(
        "30 1D",                   // TPMKey SEQUENCE, 29 bytes
        "06 06 67 81 05 0A 01 03", // type: loadable
        "02 06 00 00 40 00 00 01", // parent: 0x40000001 with two redundant 00 bytes
        "04 04 00 02 AA BB",       // pubkey
        "04 05 00 03 01 02 03",    // privkey
    ));
    let key = TpmKey::from_der(&padded).unwrap();
    assert_eq!(key.parent, handle::OWNER);
    assert_eq!(key.to_der(), minimal_der());
}

#[test]
fn sealed_keys_parse() {
    let mut der = minimal_der();
    der[9] = 0x05; // type: 2.23.133.10.1.5, sealed
    let key = TpmKey::from_der(&der).unwrap();
    assert_eq!(key.key_type, KeyType::Sealed);
    assert_eq!(key.to_der(), der);
}

#[test]
fn key_type_oids() {
    assert_eq!(KeyType::Loadable.oid(), "2.23.133.10.1.3");
    assert_eq!(KeyType::Importable.oid(), "2.23.133.10.1.4");
    assert_eq!(KeyType::Sealed.oid(), "2.23.133.10.1.5");
}

/// Base64 of [`minimal_der`], checked with Python's `base64` module.
const MINIMAL_PEM: &str = "-----BEGIN TSS2 PRIVATE KEY-----
MCAGBmeBBQoBA6ADAQEAAgRAAAABBAQAAqq7BAUAAwECAw==
-----END TSS2 PRIVATE KEY-----
";

/// A loadable key under 0x81000001 with emptyAuth, pubkey bytes 0..90 and privkey bytes
/// 0..126; PEM made with Python's `base64` and `textwrap.wrap(_, 64)`.
const LONGER_PEM: &str = "-----BEGIN TSS2 PRIVATE KEY-----
MIHwBgZngQUKAQOgAwEB/wIFAIEAAAEEWgABAgMEBQYHCAkKCwwNDg8QERITFBUW
FxgZGhscHR4fICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj9AQUJDREVG
R0hJSktMTU5PUFFSU1RVVldYWQR+AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBka
GxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0BBQkNERUZHSElK
S0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6
e3x9
-----END TSS2 PRIVATE KEY-----
";

fn longer_key() -> TpmKey {
    let pubkey = (0..90).collect();
    let privkey = (0..126).collect();
    TpmKey::new_loadable(0x8100_0001, pubkey, privkey, true)
}

#[test]
fn pem_round_trips() {
    assert_eq!(minimal_key().to_pem(), MINIMAL_PEM);
    assert_eq!(TpmKey::from_pem(MINIMAL_PEM), Ok(minimal_key()));

    assert_eq!(longer_key().to_pem(), LONGER_PEM);
    assert_eq!(TpmKey::from_pem(LONGER_PEM), Ok(longer_key()));
}

#[test]
fn pem_is_read_with_crlf_other_widths_and_surrounding_text() {
    let base64: String = LONGER_PEM
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let wrapped: Vec<&str> = base64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let text = format!(
        "a comment line\r\n-----BEGIN TSS2 PRIVATE KEY-----\r\n{}\r\n\
         -----END TSS2 PRIVATE KEY-----\r\n\r\nmore text\r\n",
        wrapped.join("\r\n")
    );
    assert_eq!(TpmKey::from_pem(&text), Ok(longer_key()));
}

#[test]
fn from_bytes_takes_pem_or_der() {
    assert_eq!(
        TpmKey::from_bytes(MINIMAL_PEM.as_bytes()),
        Ok(minimal_key())
    );
    assert_eq!(TpmKey::from_bytes(&full_der()), Ok(full_key()));

    let public_key = b"ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY= me@host\n";
    assert_eq!(
        TpmKey::from_bytes(public_key),
        Err(Error::UnrecognizedFormat)
    );
    assert_eq!(
        TpmKey::from_bytes(&[0xFF, 0xFE, 0x00]),
        Err(Error::UnrecognizedFormat)
    );
    assert_eq!(TpmKey::from_bytes(b""), Err(Error::UnrecognizedFormat));
    assert_eq!(
        TpmKey::from_pem("just text"),
        Err(Error::UnrecognizedFormat)
    );
}

#[test]
fn every_truncation_is_an_error() {
    for der in [
        minimal_der(),
        minimal_der_without_empty_auth(),
        full_der(),
        longer_key().to_der(),
    ] {
        for len in 0..der.len() {
            let result = TpmKey::from_der(&der[..len]);
            assert!(
                matches!(result, Err(Error::Truncated { .. })),
                "prefix of {len} bytes of {der:02X?} gave {result:?}"
            );
        }
    }
}

#[test]
fn truncation_names_the_innermost_field() {
    // Cut 3 bytes into the pubkey TLV, which starts at byte 21 and is 6 bytes long.
    let der = minimal_der();
    let err = TpmKey::from_der(&der[..24]).unwrap_err();
    assert_eq!(
        err,
        Error::Truncated {
            field: "pubkey",
            offset: 21,
            needed: 6,
            remaining: 3
        }
    );
    assert_eq!(
        err.to_string(),
        "key file is truncated: field `pubkey` at byte 21 needs 6 bytes, 3 remain"
    );

    // Cut inside the OCTET STRING of the first commandPolicy (byte 30, 6 bytes long).
    let err = TpmKey::from_der(&full_der()[..33]).unwrap_err();
    assert_eq!(
        err,
        Error::Truncated {
            field: "commandPolicy",
            offset: 30,
            needed: 6,
            remaining: 3
        }
    );

    // Cut right before privkey: it is the missing field.
    let err = TpmKey::from_der(&der[..27]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "key file is truncated: field `privkey` at byte 27 needs 2 bytes, 0 remain"
    );
}

#[test]
fn unknown_key_type_is_named() {
    let der = hex(concat!(
        "30 17",                // TPMKey SEQUENCE, 23 bytes
        "06 02 2A 03",          // type: 1.2.3
        "02 04 40 00 00 01",    // parent: 0x40000001
        "04 04 00 02 AA BB",    // pubkey
        "04 05 00 03 01 02 03", // privkey
    ));
    let err = TpmKey::from_der(&der).unwrap_err();
    assert_eq!(
        err,
        Error::UnknownKeyType {
            oid: "1.2.3".to_owned()
        }
    );
    assert_eq!(
        err.to_string(),
        "unknown key type OID 1.2.3 (expected 2.23.133.10.1.3 loadable, .4 importable or \
         .5 sealed)"
    );
}

#[test]
fn old_pem_label_says_to_recreate_the_key() {
    let text = "-----BEGIN TPM PRIVATE KEY-----\nMBsGBmeBBQoBAwIEQAAAAQQEAAKquwQFAAMBAgM=\n\
                -----END TPM PRIVATE KEY-----\n";
    let err = TpmKey::from_pem(text).unwrap_err();
    assert_eq!(err, Error::OldFormat);
    assert_eq!(
        err.to_string(),
        "this is an old-format ssh-tpm-agent key (\"TPM PRIVATE KEY\"), which is no longer \
         supported; recreate the key with ssh-tpm-keygen"
    );
    assert_eq!(TpmKey::from_bytes(text.as_bytes()), Err(Error::OldFormat));
}

#[test]
fn other_pem_label_suggests_import() {
    let text = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n\
                -----END OPENSSH PRIVATE KEY-----\n";
    let err = TpmKey::from_pem(text).unwrap_err();
    assert_eq!(
        err,
        Error::NotTpmKey {
            label: "OPENSSH PRIVATE KEY".to_owned()
        }
    );
    assert_eq!(
        err.to_string(),
        "this is a \"OPENSSH PRIVATE KEY\" PEM file, not a TPM key file (\"TSS2 PRIVATE KEY\"); \
         to move an existing key into the TPM, use `ssh-tpm-keygen --import`"
    );
}

#[test]
fn broken_base64_is_a_pem_error() {
    let text = MINIMAL_PEM.replace("MCAG", "MC*G");
    assert!(matches!(TpmKey::from_pem(&text), Err(Error::Pem(_))));
}

#[test]
fn trailing_bytes_are_refused() {
    let mut der = minimal_der();
    der.push(0x00);
    assert_eq!(
        TpmKey::from_der(&der),
        Err(Error::TrailingData {
            field: "TPMKey",
            offset: 34,
            count: 1
        })
    );
}

#[test]
fn malformed_fields_are_named() {
    // pubkey tagged as a UTF8String.
    let mut der = minimal_der();
    der[21] = 0x0C;
    let err = TpmKey::from_der(&der).unwrap_err();
    assert_eq!(
        err.to_string(),
        "malformed key file: field `pubkey` at byte 21 should be an OCTET STRING but is \
         a UTF8String"
    );

    // emptyAuth BOOLEAN with two content bytes.
    let der = hex("30 18 06 06 67 81 05 0A 01 03 A0 04 01 02 FF FF 02 04 40 00 00 01 04 00 04 00");
    assert_eq!(
        TpmKey::from_der(&der),
        Err(Error::InvalidValue {
            field: "emptyAuth",
            offset: 12,
            reason: "a BOOLEAN must have exactly one content byte"
        })
    );

    // The SEQUENCE ends after pubkey.
    let der = hex("30 0E 06 06 67 81 05 0A 01 03 02 01 01 04 01 00");
    let err = TpmKey::from_der(&der).unwrap_err();
    assert_eq!(
        err,
        Error::MissingField {
            field: "privkey",
            offset: 16
        }
    );

    // pubkey claims 9 bytes, but the SEQUENCE has 7 left (and the input has more).
    let der = hex("30 10 06 06 67 81 05 0A 01 03 02 01 01 04 09 00 04 00 00 00 00 00");
    assert_eq!(
        TpmKey::from_der(&der),
        Err(Error::Overrun {
            field: "pubkey",
            offset: 13,
            needed: 11,
            remaining: 5
        })
    );
}

#[test]
fn unknown_or_misplaced_optional_fields_are_refused() {
    // [6] is not defined by the draft this crate follows.
    let der = hex("30 14 06 06 67 81 05 0A 01 03 A6 03 01 01 FF 02 01 01 04 00 04 00");
    assert_eq!(
        TpmKey::from_der(&der),
        Err(Error::UnsupportedField {
            number: 6,
            offset: 10
        })
    );

    // emptyAuth [0] after description [4].
    let der = hex(concat!(
        "30 19 06 06 67 81 05 0A 01 03",
        "A4 03 0C 01 78", // description [4] "x"
        "A0 03 01 01 FF", // emptyAuth [0], out of order
        "02 01 01 04 00 04 00",
    ));
    assert_eq!(
        TpmKey::from_der(&der),
        Err(Error::UnsupportedField {
            number: 0,
            offset: 15
        })
    );
}
