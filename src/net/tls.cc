// tls.cc: BoringSSL TLS contexts and streams over memory BIOs, for shards and delivery.

#include "net/tls.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/check.h"
#include "base/log.h"
#include "base/net_address.h"

namespace chute::net {
namespace {

std::string OpenSslError() {
  uint32_t code = ERR_get_error();
  char text[256];
  ERR_error_string_n(code, text, sizeof(text));
  ERR_clear_error();
  return code == 0 ? "unknown error" : text;
}

// MemBioCapacity: the bytes a memory BIO has allocated for its contents.
size_t MemBioCapacity(BIO* bio) {
  BUF_MEM* memory = nullptr;
  return BIO_get_mem_ptr(bio, &memory) == 1 && memory != nullptr ? memory->max : 0;
}

BIO* NewMemBio() {
  BIO* bio = BIO_new(BIO_s_mem());
  CHECK(bio != nullptr);
  return bio;
}

// A verification failure names at most this many of the certificate's names, each cut to
// kNameBytesShownMax (what reaches a reply is bounded; a certificate may carry hundreds).
constexpr size_t kNamesShownMax = 4;
constexpr size_t kNameBytesShownMax = 128;

// Printable: `text` with every byte outside printable ASCII as '?' (names come from the peer
// and go into replies and the log), cut to kNameBytesShownMax.
std::string Printable(absl::string_view text) {
  std::string out(text.substr(0, kNameBytesShownMax));
  for (char& c : out) {
    if (c < 0x21 || c > 0x7e) {
      c = '?';
    }
  }
  return out;
}

// NameList: the first kNamesShownMax names added, and how many there were.
class NameList {
 public:
  void Add(std::string name) {
    if (names_.size() < kNamesShownMax) {
      names_.push_back(std::move(name));
    }
    ++count_;
  }
  bool empty() const { return count_ == 0; }
  std::string Text() const {
    std::string out = absl::StrJoin(names_, ", ");
    if (count_ > names_.size()) {
      absl::StrAppend(&out, " and ", count_ - names_.size(), " more");
    }
    return out;
  }

 private:
  std::vector<std::string> names_;
  size_t count_ = 0;
};

// CertificateNames: the names `cert` is for, as a name check sees them: its DNS and IP
// subjectAltNames, else the subject's common names. "no name" when it has none.
std::string CertificateNames(const X509* cert) {
  NameList names;
  auto* sans =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (size_t i = 0; sans != nullptr && i < sk_GENERAL_NAME_num(sans); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(sans, i);
    if (name->type == GEN_DNS) {
      const ASN1_STRING* dns = name->d.dNSName;
      names.Add(Printable(absl::string_view(
          reinterpret_cast<const char*>(ASN1_STRING_get0_data(dns)), ASN1_STRING_length(dns))));
    } else if (name->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* ip = name->d.iPAddress;
      char text[INET6_ADDRSTRLEN] = "?";
      int length = ASN1_STRING_length(ip);
      if (length == 4 || length == 16) {
        inet_ntop(length == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(ip), text, sizeof(text));
      }
      names.Add(text);
    }
  }
  sk_GENERAL_NAME_pop_free(sans, GENERAL_NAME_free);
  if (names.empty()) {
    const X509_NAME* subject = X509_get_subject_name(cert);
    for (int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1); i >= 0;
         i = X509_NAME_get_index_by_NID(subject, NID_commonName, i)) {
      unsigned char* utf8 = nullptr;
      int length =
          ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i)));
      if (length >= 0) {
        names.Add(Printable(absl::string_view(reinterpret_cast<const char*>(utf8), length)));
      }
      OPENSSL_free(utf8);
    }
  }
  return names.empty() ? "no name" : names.Text();
}

// PinOf: the pin of `cert`'s public key (SHA-256 of its DER SubjectPublicKeyInfo).
bool PinOf(X509* cert, TlsPin* pin) {
  uint8_t* der = nullptr;
  int length = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
  if (length <= 0) {
    return false;
  }
  SHA256(der, static_cast<size_t>(length), pin->data());
  OPENSSL_free(der);
  return true;
}

// DescribeVerifyFailure: why X509_verify_cert refused the chain of `leaf`, for a reply.
std::string DescribeVerifyFailure(int error, X509* leaf, const std::string& server_name) {
  if (error == X509_V_ERR_HOSTNAME_MISMATCH || error == X509_V_ERR_IP_ADDRESS_MISMATCH) {
    return absl::StrCat("name mismatch: certificate is for ", CertificateNames(leaf), ", expected ",
                        server_name);
  }
  return absl::StrCat("certificate verify failed: ", X509_verify_cert_error_string(error),
                      " (certificate for ", CertificateNames(leaf), ")");
}

// GroupIsOurs: whether this process runs with group `gid` (effective or supplementary).
bool GroupIsOurs(gid_t gid) {
  if (gid == getegid()) {
    return true;
  }
  int count = getgroups(0, nullptr);
  std::vector<gid_t> groups(count > 0 ? static_cast<size_t>(count) : 0);
  count = groups.empty() ? 0 : getgroups(count, groups.data());
  if (count <= 0) {
    return false;
  }
  auto end = groups.begin() + std::min<size_t>(static_cast<size_t>(count), groups.size());
  return std::find(groups.begin(), end, gid) != end;
}

// ReadPrivateKey: the key at `path`, read through one descriptor whose mode is checked first
// (CheckPrivateKeyMode; its warning is logged), so that the file checked is the file read.
absl::StatusOr<bssl::UniquePtr<EVP_PKEY>> ReadPrivateKey(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": cannot read the private key: ", std::strerror(errno)));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": the private key is not a file"));
  }
  std::string warning;
  absl::Status mode = CheckPrivateKeyMode(path, st.st_mode, GroupIsOurs(st.st_gid), &warning);
  if (!mode.ok()) {
    close(fd);
    return mode;
  }
  if (!warning.empty()) {
    LOG_WARNING("%s", warning);
  }
  std::string pem(kPrivateKeyFileBytesMax + 1, '\0');
  size_t length = 0;
  while (length < pem.size()) {
    ssize_t got = read(fd, pem.data() + length, pem.size() - length);
    if (got < 0 && errno == EINTR) {
      continue;
    }
    if (got <= 0) {
      break;
    }
    length += static_cast<size_t>(got);
  }
  close(fd);
  bssl::UniquePtr<EVP_PKEY> key;
  if (length <= kPrivateKeyFileBytesMax) {
    bssl::UniquePtr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(length)));
    CHECK(bio != nullptr);
    key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  }
  OPENSSL_cleanse(pem.data(), pem.size());
  if (length > kPrivateKeyFileBytesMax) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": the private key file is larger than ",
                                                   kPrivateKeyFileBytesMax, " bytes"));
  }
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": cannot load the private key: ", OpenSslError()));
  }
  return key;
}

constexpr const char* kServerCiphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384";

}  // namespace

absl::Status CheckPrivateKeyMode(absl::string_view path, uint32_t mode, bool group_is_ours,
                                 std::string* warning) {
  warning->clear();
  std::string octal = absl::StrFormat("%04o", mode & 07777);
  if ((mode & (S_IROTH | S_IWOTH)) != 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        path, ": the private key is ", (mode & S_IROTH) != 0 ? "readable" : "writable",
        " by every user (mode ", octal,
        "); refusing it: chmod o-rwx it (0640 root:chute, or 0600 for chuted's user)"));
  }
  if ((mode & S_IWGRP) != 0) {
    *warning = absl::StrCat(path, ": the private key is writable by its group (mode ", octal,
                            "); chmod g-w it");
  } else if ((mode & S_IRGRP) != 0 && !group_is_ours) {
    *warning = absl::StrCat(path, ": the private key is readable by its group (mode ", octal,
                            "), which is not a group chuted runs with; chgrp it to chuted's "
                            "group or chmod g-r it");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<TlsContext>> TlsContext::Load(const std::string& certificate_path,
                                                             const std::string& private_key_path) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_method());
  CHECK(ctx != nullptr);
  std::shared_ptr<TlsContext> context(new TlsContext(ctx));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  // TLS 1.2: only AEAD suites with forward secrecy (no CBC: LUCKY13), in our order; TLS 1.3's
  // suites are all AEAD with forward secrecy already.
  CHECK(SSL_CTX_set_strict_cipher_list(ctx, kServerCiphers) == 1);
  SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
  // Session-id resumption (TLS 1.2) needs an id context; tickets work without one.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
  static constexpr unsigned char kSessionIdContext[] = "chute";
  SSL_CTX_set_session_id_context(ctx, kSessionIdContext, sizeof(kSessionIdContext) - 1);
  if (SSL_CTX_use_certificate_chain_file(ctx, certificate_path.c_str()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(certificate_path, ": cannot load the certificate chain: ", OpenSslError()));
  }
  absl::StatusOr<bssl::UniquePtr<EVP_PKEY>> key = ReadPrivateKey(private_key_path);
  if (!key.ok()) {
    return key.status();
  }
  if (SSL_CTX_use_PrivateKey(ctx, key->get()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(private_key_path, ": cannot use the private key: ", OpenSslError()));
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(private_key_path, " does not match ", certificate_path, ": ", OpenSslError()));
  }
  return context;
}

absl::StatusOr<std::shared_ptr<TlsContext>> TlsContext::NewClient(const TlsClientOptions& options) {
  std::shared_ptr<TlsContext> context = NewUnverifiedClient();
  SSL_CTX* ctx = context->ctx_;
  if (access(options.ca_file.c_str(), R_OK) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.ca_file, ": cannot read the CA certificates: ", std::strerror(errno)));
  }
  if (SSL_CTX_load_verify_locations(ctx, options.ca_file.c_str(), nullptr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        options.ca_file, ": holds no CA certificate that loads (PEM): ", OpenSslError()));
  }
  context->pins_ = options.pins;
  context->enforce_ = options.enforce;
  // SSL_VERIFY_NONE still runs VerifyServer and keeps its verdict (PeerUnverified); only
  // SSL_VERIFY_PEER makes a failure end the handshake.
  SSL_CTX_set_verify(ctx, options.enforce ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  SSL_CTX_set_cert_verify_callback(ctx, &TlsContext::VerifyServer, context.get());
  return context;
}

std::shared_ptr<TlsContext> TlsContext::NewUnverifiedClient() {
  SSL_CTX* ctx = SSL_CTX_new(TLS_method());
  CHECK(ctx != nullptr);
  std::shared_ptr<TlsContext> context(new TlsContext(ctx));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  return context;
}

// VerifyServer: BoringSSL's certificate check in place of X509_verify_cert: the chain (and
// the name, set on the stream's X509_VERIFY_PARAM), then the pins. Records in the stream
// why it failed; returns 1 when the server is verified, 0 otherwise.
int TlsContext::VerifyServer(X509_STORE_CTX* store, void* arg) {
  const auto* context = static_cast<const TlsContext*>(arg);
  auto* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  CHECK(ssl != nullptr);
  auto* stream = static_cast<TlsStream*>(SSL_get_app_data(ssl));
  CHECK(stream != nullptr);
  X509* leaf = X509_STORE_CTX_get0_cert(store);
  stream->verify_failed_ = true;
  if (X509_verify_cert(store) != 1) {
    stream->peer_unverified_ =
        DescribeVerifyFailure(X509_STORE_CTX_get_error(store), leaf, stream->server_name_);
    return 0;
  }
  TlsPin pin{};
  if (!context->pins_.empty() &&
      (!PinOf(leaf, &pin) ||
       std::find(context->pins_.begin(), context->pins_.end(), pin) == context->pins_.end())) {
    X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
    stream->peer_unverified_ =
        absl::StrCat("public key pin mismatch: the server's key is ", FormatTlsPin(pin),
                     ", not one of tls_pins (certificate for ", CertificateNames(leaf), ")");
    return 0;
  }
  stream->peer_unverified_.clear();
  stream->verify_failed_ = false;
  return 1;
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

TlsStream::TlsStream(std::shared_ptr<TlsContext> context) : context_(std::move(context)) {
  ssl_ = SSL_new(context_->ctx());
  CHECK(ssl_ != nullptr);
  in_ = NewMemBio();
  out_ = NewMemBio();
  SSL_set_bio(ssl_, in_, out_);
  // The certificate, key and cipher configuration copied into the SSL are not needed once the
  // handshake is done (there is no renegotiation): freed then.
  SSL_set_shed_handshake_config(ssl_, 1);
  SSL_set_app_data(ssl_, this);  // for TlsContext::VerifyServer
  SSL_set_accept_state(ssl_);
}

std::unique_ptr<TlsStream> TlsStream::NewClient(std::shared_ptr<TlsContext> context,
                                                absl::string_view server_name) {
  std::unique_ptr<TlsStream> stream(new TlsStream(std::move(context)));
  SSL* ssl = stream->ssl_;
  SSL_set_connect_state(ssl);
  stream->server_name_ = std::string(server_name);
  stream->peer_unverified_ = "the server's certificate was not verified";
  if (!server_name.empty()) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    if (ParseIp(server_name).ok()) {
      CHECK(X509_VERIFY_PARAM_set1_ip_asc(param, stream->server_name_.c_str()) == 1);
    } else {
      CHECK(SSL_set_tlsext_host_name(ssl, stream->server_name_.c_str()) == 1);
      CHECK(X509_VERIFY_PARAM_set1_host(param, server_name.data(), server_name.size()) == 1);
    }
  }
  return stream;
}

TlsStream::~TlsStream() { SSL_free(ssl_); }

void TlsStream::PutCiphertext(absl::string_view bytes) {
  int written = BIO_write(in_, bytes.data(), static_cast<int>(bytes.size()));
  CHECK(written == static_cast<int>(bytes.size()));
}

size_t TlsStream::pending_ciphertext() const { return BIO_pending(in_); }

TlsStream::Result TlsStream::Fail(int ret) {
  int error = SSL_get_error(ssl_, ret);
  if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
    return Result::kWantMore;
  }
  if (error == SSL_ERROR_ZERO_RETURN) {
    return Result::kClosed;
  }
  error_ = OpenSslError();
  if (RefusedCertificate()) {
    error_ = peer_unverified_;  // the alert BoringSSL sent says less than VerifyServer found
  }
  return Result::kError;
}

TlsStream::Result TlsStream::Handshake() {
  if (handshake_done_) {
    return Result::kOk;
  }
  int ret = SSL_do_handshake(ssl_);
  if (ret == 1) {
    handshake_done_ = true;
    return Result::kOk;
  }
  return Fail(ret);
}

TlsStream::Result TlsStream::ReadPlaintext(std::string* out, size_t capacity) {
  size_t old_size = out->size();
  out->resize(old_size + capacity);
  int ret = SSL_read(ssl_, out->data() + old_size, static_cast<int>(capacity));
  if (ret > 0) {
    out->resize(old_size + static_cast<size_t>(ret));
    return Result::kOk;
  }
  out->resize(old_size);
  return Fail(ret);
}

TlsStream::Result TlsStream::Write(absl::string_view plaintext) {
  while (!plaintext.empty()) {
    int ret = SSL_write(ssl_, plaintext.data(), static_cast<int>(plaintext.size()));
    if (ret <= 0) {
      return Fail(ret);
    }
    plaintext.remove_prefix(static_cast<size_t>(ret));
  }
  return Result::kOk;
}

void TlsStream::TakeCiphertext(std::string* out) {
  size_t pending = BIO_pending(out_);
  if (pending == 0) {
    return;
  }
  size_t old_size = out->size();
  out->resize(old_size + pending);
  int read = BIO_read(out_, out->data() + old_size, static_cast<int>(pending));
  out->resize(old_size + static_cast<size_t>(read > 0 ? read : 0));
}

void TlsStream::ReleaseBuffers() {
  // A fresh BIO in place of an empty one: mem BIOs have no call that frees their buffer, and
  // SSL_set0_*bio frees the old one.
  if (BIO_pending(in_) == 0 && MemBioCapacity(in_) > 0) {
    in_ = NewMemBio();
    SSL_set0_rbio(ssl_, in_);
  }
  if (BIO_pending(out_) == 0 && MemBioCapacity(out_) > 0) {
    out_ = NewMemBio();
    SSL_set0_wbio(ssl_, out_);
  }
}

bool TlsStream::RefusedCertificate() const {
  return !handshake_done_ && verify_failed_ && context_->enforces_verification();
}

size_t TlsStream::BufferedBytes() const { return MemBioCapacity(in_) + MemBioCapacity(out_); }

const char* TlsStream::Cipher() const {
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl_);
  return cipher == nullptr ? "" : SSL_CIPHER_get_name(cipher);
}

}  // namespace chute::net
