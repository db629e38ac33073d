#include "upkeep/metadata/json_reader.hpp"

namespace upkeep::metadata {

namespace {

// Length of the UTF-8 sequence at text[i] if it is well formed, else 0.
std::size_t Utf8SequenceLength(std::string_view text, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  std::size_t n = 0;
  std::uint32_t cp = 0;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
    cp = c & 0x1fu;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    cp = c & 0x0fu;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    cp = c & 0x07u;
  } else {
    return 0;
  }
  if (i + n > text.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3fu);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff))) return 0;
  if (cp >= 0xd800 && cp <= 0xdfff) return 0;
  return n;
}

}  // namespace

bool IsValidUtf8(std::string_view text) {
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t n = Utf8SequenceLength(text, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

Result<std::uint64_t> ReadUint(const Json& value, Errc code, const std::string& path,
                               UintRange range) {
  std::optional<std::uint64_t> n;
  if (value.is_number_unsigned()) {
    n = value.get<std::uint64_t>();
  } else if (value.is_number_integer() && value.get<std::int64_t>() >= 0) {
    n = static_cast<std::uint64_t>(value.get<std::int64_t>());
  }
  if (!n) return Error(code, path + ": must be a non-negative integer");
  if (*n < range.min || *n > range.max) {
    return Error(code, path + ": must be between " + std::to_string(range.min) + " and " +
                           std::to_string(range.max));
  }
  return *n;
}

Result<JsonReader> JsonReader::Of(const Json& value, Errc code, std::string path) {
  if (!value.is_object()) {
    return Error(code, (path.empty() ? std::string("document") : path) + ": must be an object");
  }
  return JsonReader(value, code, std::move(path));
}

std::string JsonReader::Path(std::string_view key) const {
  if (path_.empty()) return std::string(key);
  return path_ + "." + std::string(key);
}

Error JsonReader::Fail(std::string_view key, const std::string& what) const {
  return Error(code_, Path(key) + ": " + what);
}

const Json* JsonReader::Optional(std::string_view key) {
  read_.emplace(key);
  auto it = object_->find(key);
  return it == object_->end() ? nullptr : &*it;
}

Result<const Json*> JsonReader::Required(std::string_view key) {
  const Json* v = Optional(key);
  if (v == nullptr) return Fail(key, "missing");
  return v;
}

namespace {

Result<std::string> CheckString(const JsonReader& r, std::string_view key, const Json& v,
                                StringRules rules) {
  if (!v.is_string()) return r.Fail(key, "must be a string");
  const auto& s = v.get_ref<const std::string&>();
  if (!rules.allow_empty && s.empty()) return r.Fail(key, "must not be empty");
  if (s.size() > rules.max_length) {
    return r.Fail(key, "longer than " + std::to_string(rules.max_length) + " bytes");
  }
  if (!IsValidUtf8(s)) return r.Fail(key, "is not valid UTF-8");
  return s;
}

}  // namespace

Result<std::string> JsonReader::String(std::string_view key, StringRules rules) {
  UPKEEP_ASSIGN_OR_RETURN(const Json* v, Required(key));
  return CheckString(*this, key, *v, rules);
}

Result<std::optional<std::string>> JsonReader::OptionalString(std::string_view key,
                                                              StringRules rules) {
  const Json* v = Optional(key);
  if (v == nullptr) return std::optional<std::string>();
  UPKEEP_ASSIGN_OR_RETURN(std::string s, CheckString(*this, key, *v, rules));
  return std::optional<std::string>(std::move(s));
}

Result<std::uint64_t> JsonReader::Uint(std::string_view key, UintRange range) {
  UPKEEP_ASSIGN_OR_RETURN(const Json* v, Required(key));
  return ReadUint(*v, code_, Path(key), range);
}

Result<std::optional<std::uint64_t>> JsonReader::OptionalUint(std::string_view key,
                                                              UintRange range) {
  const Json* v = Optional(key);
  if (v == nullptr) return std::optional<std::uint64_t>();
  UPKEEP_ASSIGN_OR_RETURN(std::uint64_t n, ReadUint(*v, code_, Path(key), range));
  return std::optional<std::uint64_t>(n);
}

Result<bool> JsonReader::Bool(std::string_view key) {
  UPKEEP_ASSIGN_OR_RETURN(const Json* v, Required(key));
  if (!v->is_boolean()) return Fail(key, "must be true or false");
  return v->get<bool>();
}

Result<std::optional<bool>> JsonReader::OptionalBool(std::string_view key) {
  const Json* v = Optional(key);
  if (v == nullptr) return std::optional<bool>();
  if (!v->is_boolean()) return Fail(key, "must be true or false");
  return std::optional<bool>(v->get<bool>());
}

Result<std::vector<std::string>> JsonReader::Strings(std::string_view key, StringListRules rules) {
  UPKEEP_ASSIGN_OR_RETURN(const Json* v, Required(key));
  if (!v->is_array()) return Fail(key, "must be an array of strings");
  if (!rules.allow_empty_list && v->empty()) return Fail(key, "must not be empty");
  std::vector<std::string> out;
  std::set<std::string, std::less<>> seen;
  for (std::size_t i = 0; i < v->size(); ++i) {
    const Json& e = (*v)[i];
    const std::string at = std::string(key) + "[" + std::to_string(i) + "]";
    if (!e.is_string() || (!rules.allow_empty_strings && e.get_ref<const std::string&>().empty())) {
      return Fail(at,
                  rules.allow_empty_strings ? "must be a string" : "must be a non-empty string");
    }
    const auto& s = e.get_ref<const std::string&>();
    if (!IsValidUtf8(s)) return Fail(at, "is not valid UTF-8");
    if (rules.unique && !seen.insert(s).second) return Fail(at, "listed twice");
    out.push_back(s);
  }
  return out;
}

Result<JsonReader> JsonReader::Object(std::string_view key) {
  UPKEEP_ASSIGN_OR_RETURN(const Json* v, Required(key));
  if (!v->is_object()) return Fail(key, "must be an object");
  return JsonReader(*v, code_, Path(key));
}

Result<std::optional<JsonReader>> JsonReader::OptionalObject(std::string_view key) {
  const Json* v = Optional(key);
  if (v == nullptr) return std::optional<JsonReader>();
  if (!v->is_object()) return Fail(key, "must be an object");
  return std::optional<JsonReader>(JsonReader(*v, code_, Path(key)));
}

Result<const Json*> JsonReader::Array(std::string_view key) {
  UPKEEP_ASSIGN_OR_RETURN(const Json* v, Required(key));
  if (!v->is_array()) return Fail(key, "must be an array");
  return v;
}

Result<void> JsonReader::NoUnknownKeys() const {
  for (auto it = object_->begin(); it != object_->end(); ++it) {
    if (!read_.contains(it.key())) return Fail(it.key(), "unknown field");
  }
  return Ok();
}

Json JsonReader::Unrecognized() const {
  Json out = Json::object();
  for (auto it = object_->begin(); it != object_->end(); ++it) {
    // nothrow: an object iterator's value, not an optional
    if (!read_.contains(it.key())) out[it.key()] = it.value();
  }
  return out;
}

}  // namespace upkeep::metadata
