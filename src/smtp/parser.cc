// parser.cc: parses MAIL, RCPT and BDAT arguments, addresses and SASL responses.

#include "smtp/parser.h"

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"

namespace chute::smtp {
namespace {

constexpr size_t kDomainLabelBytesMax = 63;
// A SASL response decodes to at most this many bytes (the AUTH line limit bounds it anyway).
constexpr size_t kSaslFieldBytesMax = 8192;

bool IsAtext(unsigned char c) {
  if (absl::ascii_isalnum(c)) {
    return true;
  }
  static constexpr absl::string_view kSpecials = "!#$%&'*+-/=?^_`{|}~";
  return kSpecials.find(static_cast<char>(c)) != absl::string_view::npos;
}

bool IsNonAscii(unsigned char c) { return c >= 0x80; }

// ValidateLocalPart: dot-string or quoted-string (RFC 5321 §4.1.2). Non-ASCII octets are
// reported through *non_ascii.
bool ValidateLocalPart(absl::string_view local, bool* non_ascii) {
  if (local.empty() || local.size() > kLocalPartBytesMax) {
    return false;
  }
  if (local.front() == '"') {
    if (local.size() < 2 || local.back() != '"') {
      return false;
    }
    for (size_t i = 1; i + 1 < local.size(); ++i) {
      unsigned char c = static_cast<unsigned char>(local[i]);
      if (c == '\\') {
        ++i;  // quoted-pair: any printable follows
        if (i + 1 >= local.size()) {
          return false;
        }
        c = static_cast<unsigned char>(local[i]);
      } else if (c == '"') {
        return false;
      }
      if (IsNonAscii(c)) {
        *non_ascii = true;
      } else if (c < 32 || c == 127) {
        return false;
      }
    }
    return true;
  }
  bool atom_empty = true;
  for (char ch : local) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c == '.') {
      if (atom_empty) {
        return false;
      }
      atom_empty = true;
    } else if (IsAtext(c) || IsNonAscii(c)) {
      *non_ascii |= IsNonAscii(c);
      atom_empty = false;
    } else {
      return false;
    }
  }
  return !atom_empty;
}

bool ValidateDomain(absl::string_view domain, bool* non_ascii) {
  if (domain.empty() || domain.size() > kDomainBytesMax) {
    return false;
  }
  if (domain.front() == '[') {
    if (domain.size() < 3 || domain.back() != ']') {
      return false;
    }
    for (char c : domain.substr(1, domain.size() - 2)) {
      if (c < 33 || c > 126 || c == '[' || c == ']' || c == '\\') {
        return false;
      }
    }
    return true;
  }
  size_t label_bytes = 0;
  for (size_t i = 0; i < domain.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(domain[i]);
    if (c == '.') {
      if (label_bytes == 0 || domain[i - 1] == '-') {
        return false;
      }
      label_bytes = 0;
      continue;
    }
    if (c == '-' && label_bytes == 0) {
      return false;
    }
    if (!absl::ascii_isalnum(c) && c != '-' && !IsNonAscii(c)) {
      return false;
    }
    *non_ascii |= IsNonAscii(c);
    if (++label_bytes > kDomainLabelBytesMax) {
      return false;
    }
  }
  return label_bytes > 0 && domain.back() != '-';
}

// FindPathEnd: the index of the '>' that closes the path opened at text[0], honouring quoted
// local parts, or npos.
size_t FindPathEnd(absl::string_view text) {
  bool quoted = false;
  for (size_t i = 1; i < text.size(); ++i) {
    char c = text[i];
    if (quoted && c == '\\') {
      ++i;
    } else if (c == '"') {
      quoted = !quoted;
    } else if (c == '>' && !quoted) {
      return i;
    }
  }
  return absl::string_view::npos;
}

struct PathRules {
  bool allow_null;
  bool allow_postmaster;
  bool smtputf8;
  Reply bad_syntax;
};

// ParsePath: `text` starts right after "FROM:" / "TO:". Sets the address and what follows the
// closing '>'.
std::optional<Reply> ParsePath(absl::string_view text, const PathRules& rules,
                               absl::string_view* address, absl::string_view* rest) {
  // Tolerate "MAIL FROM: <a@b>": common in scripts, harmless.
  while (!text.empty() && text.front() == ' ') {
    text.remove_prefix(1);
  }
  if (text.empty() || text.front() != '<') {
    return rules.bad_syntax;
  }
  size_t end = FindPathEnd(text);
  if (end == absl::string_view::npos || end - 1 > kPathBytesMax) {
    return rules.bad_syntax;
  }
  absl::string_view inner = text.substr(1, end - 1);
  *rest = text.substr(end + 1);
  if (inner.empty()) {
    if (!rules.allow_null) {
      return rules.bad_syntax;
    }
    *address = inner;
    return std::nullopt;
  }
  if (inner.front() == '@') {  // an obsolete source route "@a,@b:": ignored (RFC 5321 §4.1.2)
    size_t colon = inner.find(':');
    if (colon == absl::string_view::npos) {
      return rules.bad_syntax;
    }
    inner.remove_prefix(colon + 1);
  }
  if (rules.allow_postmaster && absl::EqualsIgnoreCase(inner, "postmaster")) {
    *address = inner;
    return std::nullopt;
  }
  size_t at = inner.rfind('@');
  if (at == absl::string_view::npos) {
    return rules.bad_syntax;
  }
  bool non_ascii = false;
  if (!ValidateLocalPart(inner.substr(0, at), &non_ascii) ||
      !ValidateDomain(inner.substr(at + 1), &non_ascii)) {
    return rules.bad_syntax;
  }
  if (non_ascii && !rules.smtputf8) {
    return kReplyNonAsciiAddress;
  }
  *address = inner;
  return std::nullopt;
}

bool IsKeywordChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-';
}

// NextParameter: splits the next "KEY[=VALUE]" off `rest` (which starts with spaces).
// Returns false at the end; sets *bad on a malformed parameter.
bool NextParameter(absl::string_view* rest, absl::string_view* key, absl::string_view* value,
                   bool* bad) {
  while (!rest->empty() && rest->front() == ' ') {
    rest->remove_prefix(1);
  }
  if (rest->empty()) {
    return false;
  }
  size_t end = rest->find(' ');
  absl::string_view param = rest->substr(0, end);
  rest->remove_prefix(end == absl::string_view::npos ? rest->size() : end);
  size_t eq = param.find('=');
  *key = param.substr(0, eq);
  *value = eq == absl::string_view::npos ? absl::string_view() : param.substr(eq + 1);
  bool ok = !key->empty() && absl::ascii_isalnum(static_cast<unsigned char>(key->front()));
  for (char c : *key) {
    ok = ok && IsKeywordChar(c);
  }
  if (eq != absl::string_view::npos) {
    ok = ok && !value->empty();
    for (char c : *value) {
      unsigned char u = static_cast<unsigned char>(c);
      ok = ok && (u >= 33 && u != '=' && u != 127);
    }
  }
  *bad = !ok;
  return true;
}

// ValidXtext: RFC 3461 xtext whose decoding holds no control characters.
bool ValidXtext(absl::string_view text) {
  for (size_t i = 0; i < text.size(); ++i) {
    unsigned char u = static_cast<unsigned char>(text[i]);
    if (u < 0x21 || u > 0x7e || u == '=') {
      return false;  // xchar is printable ASCII (RFC 3461 §4); the rest goes as +XX
    }
    if (text[i] != '+') {
      continue;
    }
    if (i + 2 >= text.size() || !absl::ascii_isxdigit(static_cast<unsigned char>(text[i + 1])) ||
        !absl::ascii_isxdigit(static_cast<unsigned char>(text[i + 2]))) {
      return false;
    }
    int hi = absl::ascii_isdigit(static_cast<unsigned char>(text[i + 1]))
                 ? text[i + 1] - '0'
                 : absl::ascii_toupper(static_cast<unsigned char>(text[i + 1])) - 'A' + 10;
    int lo = absl::ascii_isdigit(static_cast<unsigned char>(text[i + 2]))
                 ? text[i + 2] - '0'
                 : absl::ascii_toupper(static_cast<unsigned char>(text[i + 2])) - 'A' + 10;
    int decoded = hi * 16 + lo;
    if (decoded < 32 || decoded == 127) {
      return false;
    }
    i += 2;
  }
  return true;
}

// ParseSize: digits only; more than kSizeDigitsMax digits saturates (it is over any limit).
bool ParseDigits(absl::string_view text, uint64_t* out) {
  if (text.empty()) {
    return false;
  }
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') {
      return false;
    }
  }
  if (text.size() > kSizeDigitsMax) {
    *out = UINT64_MAX;
    return true;
  }
  for (char c : text) {
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  *out = value;
  return true;
}

}  // namespace

std::optional<Reply> ParseMailArgs(absl::string_view args, MailArgs* out) {
  if (args.size() < 5 || !absl::EqualsIgnoreCase(args.substr(0, 5), "FROM:")) {
    return kReplySyntax;
  }
  // SMTPUTF8 may follow the path, yet it decides whether the path may be non-ASCII.
  bool utf8 = false;
  {
    absl::string_view scan = args;
    while (!scan.empty()) {
      size_t space = scan.find(' ');
      absl::string_view word = scan.substr(0, space);
      utf8 |= absl::EqualsIgnoreCase(word, "SMTPUTF8");
      scan.remove_prefix(space == absl::string_view::npos ? scan.size() : space + 1);
    }
  }
  absl::string_view rest;
  PathRules rules{true, false, utf8, kReplyBadSenderSyntax};
  if (std::optional<Reply> error = ParsePath(args.substr(5), rules, &out->address, &rest)) {
    return error;
  }
  if (!rest.empty() && rest.front() != ' ') {
    return kReplyBadSenderSyntax;
  }
  absl::string_view key;
  absl::string_view value;
  bool bad = false;
  bool seen_size = false;
  bool seen_body = false;
  bool seen_auth = false;
  bool seen_envid = false;
  while (NextParameter(&rest, &key, &value, &bad)) {
    if (bad) {
      return kReplySyntax;
    }
    if (absl::EqualsIgnoreCase(key, "SIZE")) {
      uint64_t size = 0;
      if (seen_size || !ParseDigits(value, &size)) {
        return kReplySyntax;
      }
      seen_size = true;
      out->size = size;
    } else if (absl::EqualsIgnoreCase(key, "BODY")) {
      if (seen_body) {
        return kReplySyntax;
      }
      seen_body = true;
      if (absl::EqualsIgnoreCase(value, "7BIT")) {
        out->body = BodyType::k7Bit;
      } else if (absl::EqualsIgnoreCase(value, "8BITMIME")) {
        out->body = BodyType::k8BitMime;
      } else {
        return kReplyParameterUnsupported;  // BINARYMIME and the like are not offered
      }
    } else if (absl::EqualsIgnoreCase(key, "SMTPUTF8")) {
      if (!value.empty() || out->smtputf8) {
        return kReplySyntax;
      }
      out->smtputf8 = true;
    } else if (absl::EqualsIgnoreCase(key, "AUTH")) {
      if (seen_auth || value.empty()) {
        return kReplySyntax;
      }
      if (!ValidXtext(value)) {
        return kReplyControlInParameter;
      }
      seen_auth = true;
      out->auth = value;
    } else if (absl::EqualsIgnoreCase(key, "RET")) {
      if (out->ret != DsnRet::kUnspecified) {
        return kReplySyntax;
      }
      if (absl::EqualsIgnoreCase(value, "FULL")) {
        out->ret = DsnRet::kFull;
      } else if (absl::EqualsIgnoreCase(value, "HDRS")) {
        out->ret = DsnRet::kHeaders;
      } else {
        return kReplySyntax;
      }
    } else if (absl::EqualsIgnoreCase(key, "ENVID")) {
      if (seen_envid || value.empty() || value.size() > kEnvidBytesMax || !ValidXtext(value)) {
        return kReplySyntax;
      }
      seen_envid = true;
      out->envid = value;
    } else {
      return kReplyParameterUnsupported;
    }
  }
  return std::nullopt;
}

namespace {

// ParseNotify: NOTIFY=NEVER, or a comma list of SUCCESS, FAILURE and DELAY (RFC 3461 §4.1).
bool ParseNotify(absl::string_view value, uint8_t* out) {
  uint8_t bits = 0;
  while (true) {
    size_t comma = value.find(',');
    absl::string_view word = value.substr(0, comma);
    if (absl::EqualsIgnoreCase(word, "NEVER")) {
      bits |= kNotifyNever;
    } else if (absl::EqualsIgnoreCase(word, "SUCCESS")) {
      bits |= kNotifySuccess;
    } else if (absl::EqualsIgnoreCase(word, "FAILURE")) {
      bits |= kNotifyFailure;
    } else if (absl::EqualsIgnoreCase(word, "DELAY")) {
      bits |= kNotifyDelay;
    } else {
      return false;
    }
    if (comma == absl::string_view::npos) {
      break;
    }
    value.remove_prefix(comma + 1);
  }
  if ((bits & kNotifyNever) != 0 && bits != kNotifyNever) {
    return false;  // NEVER stands alone
  }
  *out = bits;
  return true;
}

// ValidOrcpt: "addr-type;xtext" (RFC 3461 §4.2): an atom, a semicolon, a valid xtext.
bool ValidOrcpt(absl::string_view value) {
  size_t semicolon = value.find(';');
  if (semicolon == 0 || semicolon == absl::string_view::npos || semicolon + 1 >= value.size() ||
      value.size() > kOrcptBytesMax) {
    return false;
  }
  absl::string_view type = value.substr(0, semicolon);
  bool atom = std::all_of(type.begin(), type.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-';
  });
  return atom && ValidXtext(value.substr(semicolon + 1));
}

}  // namespace

std::optional<Reply> ParseRcptArgs(absl::string_view args, bool smtputf8, RcptArgs* out) {
  if (args.size() < 3 || !absl::EqualsIgnoreCase(args.substr(0, 3), "TO:")) {
    return kReplySyntax;
  }
  absl::string_view rest;
  PathRules rules{false, true, smtputf8, kReplyBadRecipientSyntax};
  if (std::optional<Reply> error = ParsePath(args.substr(3), rules, &out->address, &rest)) {
    return error;
  }
  if (!rest.empty() && rest.front() != ' ') {
    return kReplyBadRecipientSyntax;
  }
  absl::string_view key;
  absl::string_view value;
  bool bad = false;
  bool seen_notify = false;
  bool seen_orcpt = false;
  while (NextParameter(&rest, &key, &value, &bad)) {
    if (bad) {
      return kReplySyntax;
    }
    if (absl::EqualsIgnoreCase(key, "NOTIFY")) {
      if (seen_notify || !ParseNotify(value, &out->notify)) {
        return kReplySyntax;
      }
      seen_notify = true;
    } else if (absl::EqualsIgnoreCase(key, "ORCPT")) {
      if (seen_orcpt || !ValidOrcpt(value)) {
        return kReplySyntax;
      }
      seen_orcpt = true;
      out->orcpt = value;
    } else {
      return kReplyParameterUnsupported;
    }
  }
  return std::nullopt;
}

std::optional<Reply> ParseBdatArgs(absl::string_view args, BdatArgs* out) {
  size_t space = args.find(' ');
  absl::string_view size_text = args.substr(0, space);
  absl::string_view rest =
      space == absl::string_view::npos ? absl::string_view() : args.substr(space + 1);
  if (size_text.empty() || size_text.size() > kSizeDigitsMax ||
      !ParseDigits(size_text, &out->size_bytes)) {
    return kReplySyntax;
  }
  out->last = false;
  if (rest.empty()) {
    return space == absl::string_view::npos ? std::nullopt : std::optional<Reply>(kReplySyntax);
  }
  if (!absl::EqualsIgnoreCase(rest, "LAST")) {
    return kReplySyntax;
  }
  out->last = true;
  return std::nullopt;
}

bool IsValidMailbox(absl::string_view address) {
  size_t at = address.rfind('@');
  bool non_ascii = false;
  return at != absl::string_view::npos && address.size() <= kPathBytesMax &&
         ValidateLocalPart(address.substr(0, at), &non_ascii) &&
         ValidateDomain(address.substr(at + 1), &non_ascii);
}

absl::string_view MechanismName(Mechanism mechanism) {
  switch (mechanism) {
    case Mechanism::kPlain:
      return "PLAIN";
    case Mechanism::kLogin:
      return "LOGIN";
    case Mechanism::kXoauth2:
      return "XOAUTH2";
  }
  return "?";
}

std::optional<Mechanism> ParseMechanism(absl::string_view name) {
  if (absl::EqualsIgnoreCase(name, "PLAIN")) {
    return Mechanism::kPlain;
  }
  if (absl::EqualsIgnoreCase(name, "LOGIN")) {
    return Mechanism::kLogin;
  }
  if (absl::EqualsIgnoreCase(name, "XOAUTH2")) {
    return Mechanism::kXoauth2;
  }
  return std::nullopt;
}

bool DecodeBase64(absl::string_view text, std::string* out) {
  out->clear();
  if (text == "=") {
    return true;
  }
  if (text.empty() || text.size() % 4 != 0 || text.size() / 4 * 3 > kSaslFieldBytesMax) {
    return false;
  }
  for (char c : text) {
    bool ok =
        absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/' || c == '=';
    if (!ok) {
      return false;
    }
  }
  return absl::Base64Unescape(text, out);
}

bool ParsePlain(absl::string_view decoded, SaslPlain* out) {
  size_t first = decoded.find('\0');
  if (first == absl::string_view::npos) {
    return false;
  }
  size_t second = decoded.find('\0', first + 1);
  if (second == absl::string_view::npos ||
      decoded.find('\0', second + 1) != absl::string_view::npos) {
    return false;
  }
  out->authzid = std::string(decoded.substr(0, first));
  out->authcid = std::string(decoded.substr(first + 1, second - first - 1));
  out->password = std::string(decoded.substr(second + 1));
  return !out->authcid.empty() && !out->password.empty();
}

bool ParseXoauth2(absl::string_view decoded, SaslXoauth2* out) {
  // The string must end with ^A ^A and hold exactly the fields user= and auth=.
  if (decoded.size() < 2 || decoded.substr(decoded.size() - 2) != "\x01\x01") {
    return false;
  }
  decoded.remove_suffix(2);
  bool have_user = false;
  bool have_auth = false;
  while (!decoded.empty() || !have_user || !have_auth) {
    size_t end = decoded.find('\x01');
    absl::string_view field = decoded.substr(0, end);
    decoded.remove_prefix(end == absl::string_view::npos ? decoded.size() : end + 1);
    if (absl::StartsWith(field, "user=") && !have_user) {
      out->user = std::string(field.substr(5));
      have_user = !out->user.empty();
    } else if (absl::StartsWithIgnoreCase(field, "auth=Bearer ") && !have_auth) {
      out->token = std::string(field.substr(12));
      have_auth = !out->token.empty();
    } else {
      return false;
    }
    if (end == absl::string_view::npos) {
      break;
    }
  }
  if (!have_user || !have_auth) {
    return false;
  }
  for (char c : out->user) {
    if (static_cast<unsigned char>(c) < 32 || c == 127) {
      return false;
    }
  }
  return true;
}

}  // namespace chute::smtp
