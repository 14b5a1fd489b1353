#pragma once

// RedisServer: a real redis-server (Debian's redis-server package, which tools/install-deps.sh
// installs) for the fleet's tests, on a unix socket in a temporary directory, with no TCP port
// and nothing saved to disk. Stopped (SIGKILL) by its destructor, also when a test fails.

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace chute::fleet {

class RedisServer {
 public:
  RedisServer() {
    std::string dir = ::testing::TempDir() + "/redis.XXXXXX";
    if (mkdtemp(dir.data()) != nullptr) {
      dir_ = dir;
    }
  }
  ~RedisServer() {
    Kill();
    if (!dir_.empty()) {
      std::system(absl::StrCat("rm -rf '", dir_, "'").c_str());
    }
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  // Start: runs redis-server and waits (up to 10 s) until its socket answers; false otherwise.
  bool Start() {
    if (dir_.empty()) {
      return false;
    }
    pid_ = fork();
    if (pid_ == 0) {
      int log = open((dir_ + "/redis.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      if (log >= 0) {
        dup2(log, 1);
        dup2(log, 2);
      }
      execlp("redis-server", "redis-server", "--port", "0", "--unixsocket", path().c_str(),
             "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", dir_.c_str(),
             "--loglevel", "warning", static_cast<char*>(nullptr));
      _exit(127);
    }
    absl::Time until = absl::Now() + absl::Seconds(10);
    while (absl::Now() < until) {
      if (Answers()) {
        return true;
      }
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;  // it exited: not installed (127), or refused its arguments
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }
  // Kill: SIGKILL, and waits for it.
  void Kill() {
    if (pid_ > 0) {
      kill(pid_, SIGCONT);
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
      unlink(path().c_str());
    }
  }
  void Pause() { kill(pid_, SIGSTOP); }
  void Resume() { kill(pid_, SIGCONT); }
  std::string path() const { return dir_ + "/redis.sock"; }
  std::string target() const { return "unix:" + path(); }

 private:
  bool Answers() const {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::string p = path();
    std::memcpy(address.sun_path, p.data(), std::min(p.size(), sizeof(address.sun_path) - 1));
    bool ok = connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
    if (ok) {
      const char ping[] = "PING\r\n";
      char reply[16] = {};
      ok = write(fd, ping, sizeof(ping) - 1) == sizeof(ping) - 1 && read(fd, reply, 7) > 0 &&
           std::strncmp(reply, "+PONG", 5) == 0;
    }
    close(fd);
    return ok;
  }

  std::string dir_;
  pid_t pid_ = -1;
};

}  // namespace chute::fleet
