//! The ssh-tpm CA client: enrolment, certificate renewal, status.
