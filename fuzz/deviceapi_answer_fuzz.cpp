// Fuzz target: the device API's answer parsers (enrolment, check-in, support period, error
// bodies) as a device receives them from the network (any bytes). Nothing may crash or throw;
// what parses must hold the protocol's invariants: a valid device ID, a bounded check-in interval,
// a date, and an error code of the device API for every non-2xx answer.

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "upkeep/crypto/x509.hpp"
#include "upkeep/deviceapi/client.hpp"

namespace deviceapi = upkeep::deviceapi;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 1 << 20) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  if (auto enrol = deviceapi::ParseEnrolAnswer(input)) {
    if (!upkeep::crypto::x509::IsValidDeviceId(enrol->device_id)) std::abort();
  } else if (enrol.error().code() != deviceapi::Errc::ProtocolError) {
    std::abort();
  }
  if (auto checkin = deviceapi::ParseCheckInAnswer(input)) {
    if (!checkin->next_checkin_seconds ||
        *checkin->next_checkin_seconds > deviceapi::kMaxNextCheckinSeconds) {
      std::abort();
    }
  } else if (checkin.error().code() != deviceapi::Errc::ProtocolError) {
    std::abort();
  }
  if (auto support = deviceapi::ParseSupportAnswer(input)) {
    if (support->security_updates_until.size() != 10) std::abort();
  } else if (support.error().code() != deviceapi::Errc::ProtocolError) {
    std::abort();
  }
  // The status comes from the first byte, so that the corpus reaches every mapping.
  const unsigned status = size > 0 ? 400u + static_cast<unsigned char>(data[0]) % 200u : 500u;
  const upkeep::Error error = deviceapi::ParseErrorAnswer(status, input.substr(size > 0 ? 1 : 0));
  if (error.code().category() != deviceapi::ErrcCategory()) std::abort();
  return 0;
}
