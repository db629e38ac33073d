#pragma once

// Certificates for tests of mutual TLS on 127.0.0.1, made in-process with crypto::x509: a server
// CA and the server's certificate for 127.0.0.1, a device CA and one device's client certificate,
// and an unrelated CA. Needs upkeep::crypto.

#include <chrono>
#include <string>

#include "upkeep/crypto/x509.hpp"

namespace upkeep::testing {

struct TestPki {
  struct Identity {
    crypto::x509::TlsKey key;
    std::string key_pem;
    std::string certificate_pem;
  };

  static crypto::x509::Validity Window() {
    const auto now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
    return {now - std::chrono::hours(24), now + std::chrono::hours(24 * 30)};
  }

  static Identity Ca(const char* name) {
    auto key = crypto::x509::TlsKey::Generate().value();
    auto pem = crypto::x509::CreateCa(key, name, Window()).value();
    return {key, key.ToPem().value(), pem};
  }

  static Identity Server(const Identity& ca) {
    auto key = crypto::x509::TlsKey::Generate().value();
    crypto::x509::ServerNames names;
    names.ip_addresses = {"127.0.0.1"};
    auto cert = crypto::x509::IssueServerCertificate(ca.certificate_pem, ca.key, key.public_key(),
                                                     names, Window())
                    .value();
    return {key, key.ToPem().value(), cert.pem};
  }

  static Identity Device(const Identity& ca, const char* device_id) {
    auto key = crypto::x509::TlsKey::Generate().value();
    auto cert = crypto::x509::IssueClientCertificate(ca.certificate_pem, ca.key, key.public_key(),
                                                     device_id, Window())
                    .value();
    return {key, key.ToPem().value(), cert.pem};
  }

  Identity server_ca = Ca("upkeep test server CA");
  Identity server = Server(server_ca);
  Identity device_ca = Ca("upkeep test device CA");
  Identity device = Device(device_ca, "device-1");
  Identity other_ca = Ca("unrelated CA");
};

}  // namespace upkeep::testing
