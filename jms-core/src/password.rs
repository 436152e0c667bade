//! Password hashes and TOTP secrets: format checks used when a policy is
//! loaded. (Verification arrives with the bastion-login work.)

/// Checks the Django/JumpServer format `pbkdf2_sha256$ITER$SALT$HASH`.
pub fn check_format(hash: &str) -> Result<(), String> {
    let parts: Vec<&str> = hash.split('$').collect();
    let [algorithm, iterations, salt, digest] = parts.as_slice() else {
        return Err("bad password hash: expected pbkdf2_sha256$ITERATIONS$SALT$HASH".into());
    };
    if *algorithm != "pbkdf2_sha256" {
        return Err(format!("bad password hash: algorithm `{algorithm}` (only pbkdf2_sha256)"));
    }
    match iterations.parse::<u32>() {
        Ok(n) if n >= 1000 => {}
        _ => return Err("bad password hash: iterations must be a number ≥ 1000".into()),
    }
    if salt.is_empty() || digest.is_empty() {
        return Err("bad password hash: empty salt or hash".into());
    }
    Ok(())
}

/// Checks a TOTP secret is base32 (RFC 4648, padding optional) of ≥ 80 bits.
pub fn check_totp_secret(secret: &str) -> Result<(), String> {
    let body = secret.trim_end_matches('=');
    if body.len() < 16 || !body.chars().all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c)) {
        return Err("bad TOTP secret: expected at least 16 base32 characters (A-Z, 2-7)".into());
    }
    Ok(())
}
