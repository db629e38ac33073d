#pragma once

// The local API's request bodies (docs/local-api.md), parsed strictly: one JSON object (RFC 8259,
// valid UTF-8, no duplicate keys), every field present with its type, no unknown fields, strings
// bounded. Errors are metadata::Errc (MalformedJson, InvalidMetadata) or localapi::Errc::
// InvalidArgument; the server answers all of them 400 bad_request. Public for the fuzz target.

#include <string>
#include <string_view>

#include "upkeep/common/result.hpp"
#include "upkeep/localapi/backend.hpp"

namespace upkeep::localapi {

// PUT /v1/policy
[[nodiscard]] Result<PolicySettings> ParsePolicyRequest(std::string_view body);
// POST /v1/postpone ("until" as YYYY-MM-DDTHH:MM:SSZ)
[[nodiscard]] Result<PostponeRequest> ParsePostponeRequest(std::string_view body);
// POST /v1/install: the bundle's absolute path
[[nodiscard]] Result<std::string> ParseInstallRequest(std::string_view body);

}  // namespace upkeep::localapi
