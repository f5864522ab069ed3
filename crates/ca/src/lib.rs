//! The ssh-tpm certificate authority: attested enrolment and short-lived SSH user certificates.
