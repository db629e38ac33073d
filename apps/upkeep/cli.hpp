#pragma once

#include <iosfwd>

namespace upkeep::tool {

// upkeep: release tooling.
//   upkeep image build IMAGE -o DIR [--chunk-size BYTES] [--level N] [--threads N]
//   upkeep image verify INDEX PAYLOAD [-o IMAGE]
//   upkeep bundle create --repo DIR --root ROOT --target PATH... -o FILE
//   upkeep bundle verify FILE --root ROOT --target PATH... -o DIR
//   upkeep repo init REPO [--key-type T] [--root-keys N --root-threshold M]
//                         [--targets-keys N --targets-threshold M]
//   upkeep repo add-target REPO FILE --name PATH --meta META.json [--role ROLE]
//   upkeep repo remove-target REPO --name PATH [--role ROLE]
//   upkeep repo delegate REPO ROLE (--paths P... | --hash-prefixes H... | --hash-bins BITS)
//                        [--terminating]
//                        [--keys N] [--threshold M] [--delegator ROLE] [--key-type T]
//   upkeep repo rotate REPO ROLE [--add-keys N] [--remove-key KEYID]... [--threshold N]
//   upkeep repo sign REPO ROLE (--key KEY.pem | --pkcs11-key LABEL --pkcs11-token TOKEN
//                              [--pkcs11-module MODULE])
//   upkeep repo status REPO
//   upkeep repo publish REPO DIR
//   upkeep repo refresh REPO DIR
// Exit status 0 on success, 1 on failure, 2 on bad usage.
int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

}  // namespace upkeep::tool
