// Update metadata (docs/formats/update-metadata.md): a good security release parses; every rule
// of the schema is broken once and rejected with its exact code and the field it concerns.

#include "upkeep/metadata/update_metadata.hpp"

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace upkeep::metadata {
namespace {

Json GoodCustom() {
  return Json::parse(R"({
    "upkeep": {
      "schema": 1,
      "component": "rootfs",
      "version": "2.4.1",
      "hardware": ["acme-cam-v2", "acme-cam-v2-pro"],
      "security_version": 7,
      "kind": ["security", "feature"],
      "security": {
        "severity": "high",
        "cves": ["CVE-2026-12345", "CVE-2025-0001"],
        "risks_mitigated": "Stops attackers on your network from viewing the camera feed."
      },
      "disruption": {"reboot": true, "downtime_seconds": 45,
                     "available_during_update": ["motion alerts"]},
      "settings_impact": {"effect": "migrated", "note": "Schedules move to the new format."},
      "payload": {"format": "chunked", "installed_size": 268435456,
                  "chunk_index": "rootfs/2.4.1.chunks.json"}
    },
    "vendor-x": {"kept": true}
  })");
}

// Expects ParseUpdateMetadata(custom) to fail with `code` and mention `field`.
void ExpectRejected(const Json& custom, Errc code, const std::string& field) {
  auto r = ParseUpdateMetadata(custom);
  ASSERT_FALSE(r) << "accepted; expected rejection at " << field;
  EXPECT_EQ(r.error().code(), code) << r.error().ToString();
  EXPECT_NE(r.error().message().find(field), std::string::npos) << r.error().message();
}

TEST(UpdateMetadataTest, ParsesSecurityAndFeatureRelease) {
  auto m = ParseUpdateMetadata(GoodCustom());
  ASSERT_TRUE(m) << m.error().ToString();
  EXPECT_EQ(m->component, Component::Rootfs);
  EXPECT_EQ(m->version, "2.4.1");
  EXPECT_EQ(m->hardware.size(), 2u);
  EXPECT_EQ(m->security_version, 7u);
  EXPECT_TRUE(m->is_security);
  EXPECT_TRUE(m->is_feature);
  ASSERT_TRUE(m->security);
  EXPECT_EQ(m->security->severity, Severity::High);
  EXPECT_EQ(m->security->cves[0], "CVE-2026-12345");
  EXPECT_TRUE(m->disruption.reboot);
  EXPECT_EQ(m->disruption.downtime_seconds, 45u);
  EXPECT_EQ(m->settings_impact.effect, SettingsEffect::Migrated);
  EXPECT_EQ(m->payload.format, PayloadFormat::Chunked);
  EXPECT_EQ(m->payload.chunk_index, "rootfs/2.4.1.chunks.json");
}

TEST(UpdateMetadataTest, RoundTripsThroughCustomJson) {
  auto m = ParseUpdateMetadata(GoodCustom()).value();
  auto again = ParseUpdateMetadata(ToCustomJson(m));
  ASSERT_TRUE(again) << again.error().ToString();
  EXPECT_EQ(ToCustomJson(*again), ToCustomJson(m));
}

TEST(UpdateMetadataTest, FeatureOnlyReleaseHasNoSecuritySection) {
  Json c = GoodCustom();
  c["upkeep"]["kind"] = {"feature"};
  ExpectRejected(c, Errc::InvalidUpdateMetadata, "security");
  c["upkeep"].erase("security");
  auto m = ParseUpdateMetadata(c);
  ASSERT_TRUE(m) << m.error().ToString();
  EXPECT_FALSE(m->is_security);
  EXPECT_FALSE(m->security);
}

TEST(UpdateMetadataTest, SecurityReleaseNeedsSecuritySection) {
  Json c = GoodCustom();
  c["upkeep"].erase("security");
  ExpectRejected(c, Errc::InvalidUpdateMetadata, "custom.upkeep.security");
}

TEST(UpdateMetadataTest, ReportsTargetWithoutUpdateMetadata) {
  EXPECT_ERRC(ParseUpdateMetadata(Json()), Errc::NoUpdateMetadata);
  EXPECT_ERRC(ParseUpdateMetadata(Json{{"vendor-x", 1}}), Errc::NoUpdateMetadata);
  TargetFile t;
  t.path = "fw.bin";
  auto r = UpdateMetadataOf(t);
  EXPECT_ERRC(r, Errc::NoUpdateMetadata);
}

TEST(UpdateMetadataTest, RejectsNewerSchema) {
  Json c = GoodCustom();
  c["upkeep"]["schema"] = 2;
  ExpectRejected(c, Errc::UnsupportedUpdateMetadataSchema, "schema");
}

TEST(UpdateMetadataTest, RejectsUnknownFieldsAtEveryLevel) {
  for (const char* section : {"", "security", "disruption", "settings_impact", "payload"}) {
    Json c = GoodCustom();
    Json& target = std::string(section).empty() ? c["upkeep"] : c["upkeep"][section];
    target["surprise"] = 1;
    ExpectRejected(c, Errc::InvalidUpdateMetadata, "surprise");
  }
}

TEST(UpdateMetadataTest, RejectsMissingRequiredFields) {
  for (const char* field : {"schema", "component", "version", "hardware", "security_version",
                            "kind", "disruption", "settings_impact", "payload"}) {
    Json c = GoodCustom();
    c["upkeep"].erase(field);
    ExpectRejected(c, Errc::InvalidUpdateMetadata, field);
  }
}

TEST(UpdateMetadataTest, RejectsValuesOutsideTheirSets) {
  struct Case {
    const char* section;
    const char* field;
    Json value;
  };
  const Case cases[] = {
      {"", "component", "kernel"},
      {"", "kind", Json::array({"cosmetic"})},
      {"", "kind", Json::array()},
      {"", "kind", Json::array({"security", "security"})},
      {"", "hardware", Json::array()},
      {"", "hardware", Json::array({""})},
      {"", "version", ""},
      {"", "security_version", -1},
      {"", "security_version", "7"},
      {"security", "severity", "urgent"},
      {"security", "cves", Json::array({"CVE-26-1"})},
      {"security", "cves", Json::array({"cve-2026-12345"})},
      {"security", "risks_mitigated", ""},
      {"disruption", "reboot", "yes"},
      {"disruption", "downtime_seconds", 8 * 24 * 3600},
      {"settings_impact", "effect", "wiped"},
      {"payload", "format", "zip"},
      {"payload", "installed_size", -5},
  };
  for (const auto& tc : cases) {
    Json c = GoodCustom();
    Json& target = std::string(tc.section).empty() ? c["upkeep"] : c["upkeep"][tc.section];
    target[tc.field] = tc.value;
    ExpectRejected(c, Errc::InvalidUpdateMetadata, tc.field);
  }
}

// Users must be told what happens to their settings when they change.
TEST(UpdateMetadataTest, ChangedSettingsNeedANote) {
  Json c = GoodCustom();
  c["upkeep"]["settings_impact"] = {{"effect", "reset"}, {"note", ""}};
  ExpectRejected(c, Errc::InvalidUpdateMetadata, "settings_impact.note");
  c["upkeep"]["settings_impact"] = {{"effect", "none"}, {"note", ""}};
  EXPECT_TRUE(ParseUpdateMetadata(c));
}

TEST(UpdateMetadataTest, ChunkIndexGoesWithChunkedPayloadsOnly) {
  Json c = GoodCustom();
  c["upkeep"]["payload"].erase("chunk_index");
  ExpectRejected(c, Errc::InvalidUpdateMetadata, "payload.chunk_index");
  c = GoodCustom();
  c["upkeep"]["payload"]["format"] = "zstd";
  ExpectRejected(c, Errc::InvalidUpdateMetadata, "payload.chunk_index");
  c["upkeep"]["payload"].erase("chunk_index");
  EXPECT_TRUE(ParseUpdateMetadata(c));
}

}  // namespace
}  // namespace upkeep::metadata
