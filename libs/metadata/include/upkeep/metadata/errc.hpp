#pragma once

#include "upkeep/common/error.hpp"

namespace upkeep::metadata {

// One code per verification rule. Values are stable; docs/security-tests.md maps each to its test.
enum class Errc {
  // Parsing and format
  MalformedJson = 1,          // not JSON, invalid UTF-8, duplicate key, too deep
  NotCanonicalizable = 2,     // a float where canonical JSON allows none
  InvalidMetadata = 3,        // a required field is missing or has the wrong type or value
  WrongType = 4,              // "_type" is not the role that was requested
  UnsupportedSpecVersion = 5, // spec_version major is not 1
  InvalidKey = 6,             // a key object cannot be used (unknown type, bad material)
  KeyIdMismatch = 7,          // a key's ID is not the SHA-256 of its canonical form
  DuplicateSignature = 8,     // two signatures carry the same key ID
  // Signatures
  ThresholdNotMet = 10,            // too few distinct valid signatures from the role's keys
  RootNotSignedByTrustedRoot = 11, // new root lacks the trusted root's threshold (5.3.4)
  RootNotSignedByItself = 12,      // new root lacks its own threshold (5.3.4)
  // Versions and rollback
  RootVersionNotSequential = 20,   // new root is not exactly N+1 (5.3.5)
  VersionRollback = 21,            // new timestamp older than trusted (5.4.3.1)
  SnapshotVersionRollback = 22,    // timestamp lists an older snapshot than trusted (5.4.3.2)
  SnapshotVersionMismatch = 23,    // snapshot version differs from timestamp's meta (5.5.4)
  TargetsRoleRemoved = 24,         // a targets role listed before is missing now (5.5.5)
  TargetsVersionRollback = 25,     // snapshot lists an older targets version than trusted (5.5.5)
  TargetsVersionMismatch = 26,     // targets version differs from snapshot's meta (5.6.4)
  // Freshness
  Expired = 30,                    // metadata expired before the update start time
  // Consistency with the signer above
  MetaLengthMismatch = 40,         // metadata length differs from what its parent lists
  MetaHashMismatch = 41,           // metadata hash differs from what its parent lists
  RoleNotInSnapshot = 42,          // a targets role is not listed in snapshot meta
  // Targets
  TargetNotFound = 50,             // no trusted role describes the requested target path
  TargetLengthMismatch = 51,       // target file longer or shorter than its signed length
  TargetHashMismatch = 52,         // target file hash differs from the signed hash
  DelegationLimitReached = 53,     // search visited the maximum number of roles
  InvalidTargetPath = 54,          // path unusable as a target name (ValidateTargetPath)
  InvalidTargetHash = 55,          // a target hash value unusable in a URL (ValidateHashValue)
  // Fetching and storage
  MetadataTooLarge = 60,           // response exceeded the role's size limit
  FetchFailed = 61,                // network or server failure
  StorageFailed = 62,              // the trusted metadata could not be read or persisted
  NotTrusted = 63,                 // an operation needs metadata that is not loaded yet
  // Update metadata (target "custom")
  NoUpdateMetadata = 70,                 // the target has no "upkeep" object in "custom"
  InvalidUpdateMetadata = 71,            // a field is missing, unknown, or has a bad value
  UnsupportedUpdateMetadataSchema = 72,  // "schema" is newer than this upkeep understands
  // Director and Uptane full verification (director.hpp)
  DirectorTargetNotInImageRepository = 80,  // the image repository lists no such target path
  DirectorImageMismatch = 81,        // length or a hash differs from the image repository's
  DirectorImageNotForHardware = 82,  // the image target's hardware list excludes this model
  DirectorWrongDevice = 83,          // "upkeep_director" names another device
  DirectorWrongHardware = 84,        // "upkeep_director" names another model
  DirectorStaleCounter = 85,         // counter below the last accepted one (replayed answer)
  DirectorCounterAhead = 86,         // counter above the one this check-in sent
  DirectorHasDelegations = 87,       // the director's targets delegate
};

}  // namespace upkeep::metadata

UPKEEP_DECLARE_ERRC(upkeep::metadata);
