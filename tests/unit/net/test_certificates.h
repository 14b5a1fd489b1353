#pragma once

// test_certificates.h: for unit tests that need a TLS server: a fresh self-signed certificate
// and key as PEM files in a temporary directory, and a server context made of them.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "net/tls.h"

namespace chute::net {

// TempDir: a fresh directory under the test's temporary directory, removed with its files.
class TempDir {
 public:
  TempDir() : path_(::testing::TempDir() + "/tls_test.XXXXXX") {
    if (mkdtemp(path_.data()) == nullptr) {
      path_.clear();
    }
  }
  ~TempDir() {
    for (const std::string& file : files_) {
      unlink(file.c_str());
    }
    rmdir(path_.c_str());
  }
  // File: the path of `name` in it (removed with it).
  std::string File(const std::string& name) {
    files_.push_back(path_ + "/" + name);
    return files_.back();
  }

 private:
  std::string path_;
  std::vector<std::string> files_;
};

// WritePem: `write` into the file at `path`, made with `mode`; false when it cannot be
// opened or written.
template <typename Write>
inline bool WritePem(const std::string& path, mode_t mode, Write write) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  FILE* file = fd < 0 ? nullptr : fdopen(fd, "w");
  if (file == nullptr) {
    return false;
  }
  bool ok = fchmod(fd, mode) == 0 && write(file);  // the umask does not decide the mode
  return fclose(file) == 0 && ok;
}

// SelfSigned: a fresh P-256 key and a self-signed certificate for CN=localhost (no
// subjectAltName), as PEM files in a temporary directory: the certificate, and the key with
// `key_mode`.
struct SelfSigned {
  explicit SelfSigned(mode_t key_mode = 0600) {
    bssl::UniquePtr<EC_KEY> ec(EC_KEY_new_by_curve_name(NID_X9_62_prime256v1));
    bssl::UniquePtr<EVP_PKEY> key(EVP_PKEY_new());
    bssl::UniquePtr<X509> cert(X509_new());
    if (ec == nullptr || key == nullptr || cert == nullptr || !EC_KEY_generate_key(ec.get()) ||
        !EVP_PKEY_set1_EC_KEY(key.get(), ec.get())) {
      return;
    }
    X509_NAME* name = X509_get_subject_name(cert.get());
    if (!X509_set_version(cert.get(), 2) ||
        !ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1) ||
        X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60) == nullptr ||
        X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600) == nullptr ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                    reinterpret_cast<const uint8_t*>("localhost"), -1, -1, 0) ||
        !X509_set_issuer_name(cert.get(), name) || !X509_set_pubkey(cert.get(), key.get()) ||
        X509_sign(cert.get(), key.get(), EVP_sha256()) == 0) {
      return;
    }
    // The pin of the key, as an operator computes it from the certificate.
    uint8_t* der = nullptr;
    int length = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert.get()), &der);
    if (length <= 0) {
      return;
    }
    SHA256(der, static_cast<size_t>(length), pin.data());
    OPENSSL_free(der);
    cert_path = dir.File("cert.pem");
    key_path = dir.File("key.pem");
    ok = WritePem(cert_path, 0644, [&](FILE* f) { return PEM_write_X509(f, cert.get()) == 1; }) &&
         WritePem(key_path, key_mode, [&](FILE* f) {
           return PEM_write_PrivateKey(f, key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1;
         });
  }

  TempDir dir;
  std::string cert_path;
  std::string key_path;
  TlsPin pin{};
  bool ok = false;
};

// A server context with a fresh self-signed certificate for "localhost"; null on failure.
inline std::shared_ptr<TlsContext> SelfSignedContext() {
  SelfSigned files;
  if (!files.ok) {
    return nullptr;
  }
  absl::StatusOr<std::shared_ptr<TlsContext>> context =
      TlsContext::Load(files.cert_path, files.key_path);
  return context.ok() ? *context : nullptr;
}

}  // namespace chute::net
