// Fuzz target: private key files (REPO/keys/<keyid>.pem, `upkeep repo sign --key`) read back as
// PEM, plain or encrypted with the passphrase "fuzz". A key that loads must sign, and its
// signature must verify with its public half.

#include <cstdint>
#include <cstdlib>
#include <span>
#include <string_view>

#include "upkeep/crypto/crypto.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace upkeep::crypto;
  const std::string_view pem(reinterpret_cast<const char*>(data), size);
  for (std::string_view passphrase : {std::string_view(), std::string_view("fuzz")}) {
    auto key = PrivateKey::FromPem(pem, passphrase);
    if (!key) continue;
    const std::uint8_t message[] = {'m', 's', 'g'};
    auto sig = key->Sign(message);
    if (!sig || !key->public_key().Verify(message, *sig)) std::abort();
  }
  return 0;
}
