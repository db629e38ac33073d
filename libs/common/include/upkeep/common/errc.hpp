#pragma once

#include "upkeep/common/error.hpp"

namespace upkeep::common {

// Errors of the common layer: local files and the Fetcher contract. Values are stable.
enum class Errc {
  IoError = 1,          // a read, write, fsync or rename failed
  FileNotFound = 2,     // the local file does not exist
  InvalidArgument = 3,  // a caller passed a value the function cannot use
  FileTooLarge = 4,     // a local file is larger than the caller's limit
  Internal = 5,         // an unexpected failure inside upkeep (out of memory, a bug), caught
                        // at a program's outer edge instead of aborting
  // Fetcher contract (implemented by transport, used by metadata):
  RemoteNotFound = 20,   // the server answered 404 or 403 (the file is not there)
  LengthExceeded = 21,   // more bytes arrived than the caller allowed; transfer aborted
  Timeout = 22,          // connect or low-speed timeout (slow-retrieval defence)
  NetworkError = 23,     // connection failed, reset, or TLS error
  HttpStatus = 24,       // any other non-success HTTP status
  Aborted = 25,          // the consumer stopped the transfer
};

}  // namespace upkeep::common

UPKEEP_DECLARE_ERRC(upkeep::common);
