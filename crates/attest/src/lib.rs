//! Attestation checks for the ssh-tpm CA: TPM structures, signatures, MakeCredential, EK certificates, the wire protocol.
