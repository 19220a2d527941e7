//! The install policy: may this bundle replace what the device runs?
//!
//! Owns: the compatible-string match, `min_previous_version`, the
//! downgrade rule and the same-version rule.
//! Must not: read files or know how the version installed is found.

use std::cmp::Ordering;

use super::manifest::Manifest;
use super::BundleError;

/// Checks, in this order, that:
/// - `manifest.compatible` equals the device's `compatible` exactly;
/// - the installed version is at least `manifest.min_previous_version`;
/// - the bundle's version is not older than `installed`, unless the caller
///   asks for a downgrade (`allow_downgrade_requested`) AND the manifest
///   allows one (`allow_downgrade: true`);
/// - the bundle's version is not the installed one (semver precedence:
///   build metadata is ignored), unless `reinstall`.
pub fn check_policy(
    manifest: &Manifest,
    installed: &semver::Version,
    compatible: &str,
    allow_downgrade_requested: bool,
    reinstall: bool,
) -> Result<(), BundleError> {
    if manifest.compatible != compatible {
        return Err(BundleError::Incompatible { expected: compatible.to_owned(), found: manifest.compatible.clone() });
    }
    if let Some(minimum) = &manifest.min_previous_version {
        if installed.cmp_precedence(minimum) == Ordering::Less {
            return Err(BundleError::BelowMinimum { installed: installed.to_string(), minimum: minimum.to_string() });
        }
    }
    match manifest.version.cmp_precedence(installed) {
        Ordering::Greater => Ok(()),
        Ordering::Equal if reinstall => Ok(()),
        Ordering::Equal => Err(BundleError::AlreadyInstalled { version: installed.to_string() }),
        Ordering::Less => {
            let reason = match (allow_downgrade_requested, manifest.allow_downgrade) {
                (true, true) => return Ok(()),
                (false, true) => "a downgrade must be asked for (--allow-downgrade)",
                (true, false) => "the bundle's manifest does not allow a downgrade (allow_downgrade is false)",
                (false, false) => "downgrades are refused (the manifest does not allow one, and none was asked for)",
            };
            Err(BundleError::Downgrade { installed: installed.to_string(), bundle: manifest.version.to_string(), reason })
        }
    }
}
