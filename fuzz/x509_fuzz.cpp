// Fuzz target: certificate signing requests and peer certificates as the fleet server receives
// them (any bytes, PEM or DER). What parses must be consistent: a CSR's name is a device ID and
// its key can be issued a certificate that then verifies; a certificate's DER form parses to the
// same certificate; a verified certificate names a device.

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "upkeep/crypto/x509.hpp"

namespace {

namespace x509 = upkeep::crypto::x509;

const std::chrono::sys_seconds kNow{std::chrono::sys_days{std::chrono::year{2027} / 1 / 1}};
const x509::Validity kValidity{kNow - std::chrono::days{1}, kNow + std::chrono::days{1}};

struct Ca {
  x509::TlsKey key = x509::TlsKey::Generate().value();
  std::string pem = x509::CreateCa(key, "fuzz CA", kValidity).value();
};

const Ca& TheCa() {
  static const Ca* ca = new Ca();
  return *ca;
}

void CheckCsr(std::string_view input) {
  auto csr = x509::ParseCsr(input);
  if (!csr) return;
  if (!x509::IsValidDeviceId(csr->common_name)) std::abort();
  auto issued = x509::IssueClientCertificate(TheCa().pem, TheCa().key, csr->public_key,
                                             csr->common_name, kValidity);
  if (!issued) std::abort();
  auto verified = x509::VerifyIssuedBy(issued->pem, TheCa().pem, kNow);
  if (!verified || verified->device_id != csr->common_name ||
      verified->public_key != csr->public_key) {
    std::abort();
  }
}

void CheckCertificate(std::string_view input) {
  auto info = x509::ParseCertificate(input);
  if (info) {
    if (!info->device_id.empty() && !x509::IsValidDeviceId(info->device_id)) std::abort();
    auto der = x509::CertificateDer(input);
    if (!der) std::abort();
    auto again = x509::ParseCertificate(*der);
    if (!again || again->sha256_fingerprint != info->sha256_fingerprint ||
        again->device_id != info->device_id || again->serial_hex != info->serial_hex) {
      std::abort();
    }
  }
  auto verified = x509::VerifyIssuedBy(input, TheCa().pem, kNow);
  if (verified && verified->device_id.empty()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > x509::kMaxInputBytes + 1) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  CheckCsr(input);
  CheckCertificate(input);
  return 0;
}
