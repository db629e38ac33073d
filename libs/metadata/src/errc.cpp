#include "upkeep/metadata/errc.hpp"

namespace upkeep::metadata {

namespace {
const char* ErrcName(int value) {
  switch (static_cast<Errc>(value)) {
    case Errc::MalformedJson: return "MalformedJson";
    case Errc::NotCanonicalizable: return "NotCanonicalizable";
    case Errc::InvalidMetadata: return "InvalidMetadata";
    case Errc::WrongType: return "WrongType";
    case Errc::UnsupportedSpecVersion: return "UnsupportedSpecVersion";
    case Errc::InvalidKey: return "InvalidKey";
    case Errc::KeyIdMismatch: return "KeyIdMismatch";
    case Errc::DuplicateSignature: return "DuplicateSignature";
    case Errc::ThresholdNotMet: return "ThresholdNotMet";
    case Errc::RootNotSignedByTrustedRoot: return "RootNotSignedByTrustedRoot";
    case Errc::RootNotSignedByItself: return "RootNotSignedByItself";
    case Errc::RootVersionNotSequential: return "RootVersionNotSequential";
    case Errc::VersionRollback: return "VersionRollback";
    case Errc::SnapshotVersionRollback: return "SnapshotVersionRollback";
    case Errc::SnapshotVersionMismatch: return "SnapshotVersionMismatch";
    case Errc::TargetsRoleRemoved: return "TargetsRoleRemoved";
    case Errc::TargetsVersionRollback: return "TargetsVersionRollback";
    case Errc::TargetsVersionMismatch: return "TargetsVersionMismatch";
    case Errc::Expired: return "Expired";
    case Errc::MetaLengthMismatch: return "MetaLengthMismatch";
    case Errc::MetaHashMismatch: return "MetaHashMismatch";
    case Errc::RoleNotInSnapshot: return "RoleNotInSnapshot";
    case Errc::TargetNotFound: return "TargetNotFound";
    case Errc::TargetLengthMismatch: return "TargetLengthMismatch";
    case Errc::TargetHashMismatch: return "TargetHashMismatch";
    case Errc::DelegationLimitReached: return "DelegationLimitReached";
    case Errc::InvalidTargetPath: return "InvalidTargetPath";
    case Errc::InvalidTargetHash: return "InvalidTargetHash";
    case Errc::MetadataTooLarge: return "MetadataTooLarge";
    case Errc::FetchFailed: return "FetchFailed";
    case Errc::StorageFailed: return "StorageFailed";
    case Errc::NotTrusted: return "NotTrusted";
    case Errc::NoUpdateMetadata: return "NoUpdateMetadata";
    case Errc::InvalidUpdateMetadata: return "InvalidUpdateMetadata";
    case Errc::UnsupportedUpdateMetadataSchema: return "UnsupportedUpdateMetadataSchema";
    case Errc::DirectorTargetNotInImageRepository: return "DirectorTargetNotInImageRepository";
    case Errc::DirectorImageMismatch: return "DirectorImageMismatch";
    case Errc::DirectorImageNotForHardware: return "DirectorImageNotForHardware";
    case Errc::DirectorWrongDevice: return "DirectorWrongDevice";
    case Errc::DirectorWrongHardware: return "DirectorWrongHardware";
    case Errc::DirectorStaleCounter: return "DirectorStaleCounter";
    case Errc::DirectorCounterAhead: return "DirectorCounterAhead";
    case Errc::DirectorHasDelegations: return "DirectorHasDelegations";
  }
  return "Unknown";
}
}  // namespace

const std::error_category& ErrcCategory() noexcept {
  static const NamedErrorCategory category("metadata", &ErrcName);
  return category;
}

}  // namespace upkeep::metadata
