//! OpenSSH private keys (OpenSSH PROTOCOL.key), read here rather than by `ssh-key`: its 0.6
//! releases refuse ECDSA scalars that OpenSSH encodes shorter than the field size, which is
//! about half of all P-521 keys and one P-256 key in 256. `ssh-key` still does the
//! decryption (bcrypt-pbkdf and the cipher).
//!
//! ```text
//! "openssh-key-v1\0" ‖ string ciphername ‖ string kdfname ‖ string kdfoptions ‖ uint32 N=1
//!   ‖ string publickey ‖ string encrypted-private [‖ AEAD tag]
//! private = uint32 check ‖ uint32 check ‖ keytype-specific fields ‖ string comment ‖ padding
//! ```

use ssh_encoding::Decode;
use zeroize::Zeroizing;

use super::{ecc_key, rsa_parts, ExternalKey, Material, SecretBytes};
use crate::error::{Error, Result};
use crate::template::KeySpec;

const MAGIC: &[u8] = b"openssh-key-v1\0";
/// OpenSSH wraps its base64 at 70 columns.
const LINE_WIDTH: usize = 70;

/// Reads the OpenSSH private key in `text`, decrypting it with `passphrase` if need be.
pub(super) fn read(text: &str, passphrase: Option<&SecretBytes>) -> Result<ExternalKey> {
    let start = text.find("-----BEGIN").unwrap_or(0);
    let mut decoder = pem_rfc7468::Decoder::new_wrapped(&text.as_bytes()[start..], LINE_WIDTH)
        .map_err(|e| malformed(&e.to_string()))?;
    let mut blob = Zeroizing::new(Vec::new());
    decoder
        .decode_to_end(&mut blob)
        .map_err(|e| malformed(&e.to_string()))?;

    let mut r = blob
        .strip_prefix(MAGIC)
        .ok_or_else(|| malformed("not openssh-key-v1"))?;
    let cipher_name = String::decode(&mut r).map_err(field("cipher"))?;
    let cipher = ssh_key::Cipher::new(&cipher_name)
        .map_err(|_| malformed(&format!("unknown cipher {cipher_name}")))?;
    let kdf = ssh_key::Kdf::decode(&mut r).map_err(field("kdf"))?;
    if u32::decode(&mut r).map_err(field("key count"))? != 1 {
        return Err(malformed("the file holds more than one key"));
    }
    let _public = Vec::<u8>::decode(&mut r).map_err(field("public key"))?;
    let mut private = Zeroizing::new(Vec::<u8>::decode(&mut r).map_err(field("private key"))?);

    let encrypted = !cipher.is_none();
    if encrypted {
        let passphrase = passphrase.ok_or(Error::PassphraseRequired)?;
        let tag = if cipher.has_tag() {
            Some(
                r.try_into()
                    .map_err(|_| malformed("the AEAD tag is missing"))?,
            )
        } else {
            None
        };
        let (key, iv) = kdf
            .derive_key_and_iv(cipher, passphrase.expose())
            .map_err(|e| malformed(&e.to_string()))?;
        cipher
            .decrypt(&key, &iv, &mut private, tag)
            .map_err(|_| Error::WrongPassphrase)?;
    }

    let mut r = &private[..];
    let check = (u32::decode(&mut r), u32::decode(&mut r));
    match check {
        (Ok(a), Ok(b)) if a == b => {}
        _ if encrypted => return Err(Error::WrongPassphrase),
        _ => return Err(malformed("the check numbers differ")),
    }
    let mut key = keypair(&mut r)?;
    key.comment = String::decode(&mut r).map_err(field("comment"))?;
    Ok(key)
}

/// The key-type-specific fields of the private section.
fn keypair(r: &mut &[u8]) -> Result<ExternalKey> {
    let key_type = String::decode(r).map_err(field("key type"))?;
    let spec = match key_type.as_str() {
        "ecdsa-sha2-nistp256" => KeySpec::EcdsaP256,
        "ecdsa-sha2-nistp384" => KeySpec::EcdsaP384,
        "ecdsa-sha2-nistp521" => KeySpec::EcdsaP521,
        "ssh-rsa" => {
            let n = mpint(r, "n")?;
            let e = mpint(r, "e")?;
            let _d = secret_mpint(r, "d")?;
            let _iqmp = secret_mpint(r, "iqmp")?;
            let p = secret_mpint(r, "p")?;
            let _q = secret_mpint(r, "q")?;
            return rsa_parts(n, &e, p);
        }
        "ssh-ed25519" => {
            return Err(Error::Unsupported(
                "Ed25519 keys cannot live in a TPM (TPMs have no Ed25519); only ECDSA and RSA \
                 keys can be imported"
                    .into(),
            ))
        }
        other => {
            return Err(Error::Unsupported(format!(
                "{other} keys cannot live in a TPM; only ECDSA and RSA keys can be imported"
            )))
        }
    };
    let _curve = String::decode(r).map_err(field("curve"))?;
    let point = Vec::<u8>::decode(r).map_err(field("public point"))?;
    let scalar = secret_mpint(r, "private scalar")?;
    let key = ecc_key(spec, scalar.expose())?;
    let Material::Ecc { x, y, .. } = key.material() else {
        unreachable!("ecc_key makes ECC keys")
    };
    if point != [&[0x04][..], x, y].concat() {
        return Err(Error::Unsupported(
            "the OpenSSH key's public and private halves do not match".into(),
        ));
    }
    Ok(key)
}

/// An mpint's magnitude, without the sign byte OpenSSH adds before a high bit.
fn mpint(r: &mut &[u8], name: &'static str) -> Result<Vec<u8>> {
    let bytes = Vec::<u8>::decode(r).map_err(field(name))?;
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    Ok(bytes[start..].to_vec())
}

fn secret_mpint(r: &mut &[u8], name: &'static str) -> Result<SecretBytes> {
    let bytes = Zeroizing::new(Vec::<u8>::decode(r).map_err(field(name))?);
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    Ok(SecretBytes::copy_from(&bytes[start..]))
}

fn field<E: std::fmt::Display>(name: &'static str) -> impl Fn(E) -> Error {
    move |e| malformed(&format!("{name}: {e}"))
}

fn malformed(why: &str) -> Error {
    Error::Unsupported(format!("the OpenSSH private key is malformed ({why})"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `ssh-keygen -t ecdsa -b 521 -N '' -C p521@example`, a key whose scalar OpenSSH wrote
    /// in 65 bytes (ssh-key 0.6 refuses it).
    const SHORT_P521: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAArAAAABNlY2RzYS
1zaGEyLW5pc3RwNTIxAAAACG5pc3RwNTIxAAAAhQQB0BHcfq4G7Kg52NBILHcWh7MeNpSW
q2GClP0Ti6JBdlQjoVxmGB7LCtRiRPc6SfzF0ZvhHbRbDAA64tMGNofcqDcAphxOLhsxFT
uwuXmn5skbt5UvHOUDcGUL9sUBvZSPkkk/HJXbif9CsxFi3Knra7lT1sx5AUpdzWRD6msu
48O58UkAAAEQOgjiwzoI4sMAAAATZWNkc2Etc2hhMi1uaXN0cDUyMQAAAAhuaXN0cDUyMQ
AAAIUEAdAR3H6uBuyoOdjQSCx3FoezHjaUlqthgpT9E4uiQXZUI6FcZhgeywrUYkT3Okn8
xdGb4R20WwwAOuLTBjaH3Kg3AKYcTi4bMRU7sLl5p+bJG7eVLxzlA3BlC/bFAb2Uj5JJPx
yV24n/QrMRYtyp62u5U9bMeQFKXc1kQ+prLuPDufFJAAAAQQ5hYNEeTBHHFlaVg+bR7pp1
7MudcSWYcD8DnaQUcrSgB+hbsEH7YFO0gDJjII8zNrWWD/6fBfwBWNm26MRLB5tFAAAADH
A1MjFAZXhhbXBsZQECAwQFBgc=
-----END OPENSSH PRIVATE KEY-----
";

    #[test]
    fn reads_a_p521_key_with_a_short_scalar() {
        let key = read(SHORT_P521, None).unwrap();
        assert_eq!(key.spec(), KeySpec::EcdsaP521);
        assert_eq!(key.comment(), "p521@example");
        let Material::Ecc { d, .. } = key.material() else {
            panic!("ECC")
        };
        assert_eq!(d.expose().len(), 66, "padded to the field size");
    }
}
