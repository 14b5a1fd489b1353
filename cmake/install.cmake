# install.cmake: what `cmake --install` puts where, the man pages, and the Debian package
# (CPack DEB) made from the same rules. Included at the end of the top-level CMakeLists.txt,
# once the targets exist.
#
# The layout is Debian's: with the default prefix (/usr) GNUInstallDirs gives /usr/sbin,
# /usr/bin, /usr/share/man and, for a /usr prefix, /etc and /var. systemd's own directories
# (the unit, sysusers.d, tmpfiles.d) are cache variables with Debian 12's values.
#
#   cmake --build --preset release --target chuted chutectl chute-load man
#   cmake --install build [--prefix /usr] [DESTDIR=...]
#   cmake --build --preset release --target deb      # build/chute_<version>_<arch>.deb

# CMake's default prefix (/usr/local) becomes /usr once, the first time a build tree sees this
# file (also in a tree configured before it existed); a prefix given with -D stays.
if(NOT CHUTE_INSTALL_LAYOUT_DONE)
  if(CMAKE_INSTALL_PREFIX_INITIALIZED_TO_DEFAULT OR CMAKE_INSTALL_PREFIX STREQUAL "/usr/local")
    set(CMAKE_INSTALL_PREFIX "/usr" CACHE PATH "Install prefix (Debian layout)" FORCE)
  endif()
  set(CHUTE_INSTALL_LAYOUT_DONE ON CACHE INTERNAL "the Debian prefix was chosen once")
endif()
include(GNUInstallDirs)

set(CHUTE_SYSTEMD_UNIT_DIR "/lib/systemd/system" CACHE PATH "Where the systemd unit goes")
set(CHUTE_SYSUSERS_DIR "/usr/lib/sysusers.d" CACHE PATH "Where sysusers.d files go")
set(CHUTE_TMPFILES_DIR "/usr/lib/tmpfiles.d" CACHE PATH "Where tmpfiles.d files go")

# `install` and `package` install only what was built (the targets below), not all of the
# tests and benchmarks first.
set(CMAKE_SKIP_INSTALL_ALL_DEPENDENCY ON)

# BoringSSL lives outside the loader's path (FindBoringSSL.cmake): installed binaries keep
# that directory as their RUNPATH.
get_filename_component(_chute_boringssl_dir "${BoringSSL_CRYPTO_LIBRARY}" DIRECTORY)
set_target_properties(chuted chutectl chute-load PROPERTIES
  INSTALL_RPATH "${_chute_boringssl_dir}")

install(TARGETS chuted DESTINATION "${CMAKE_INSTALL_SBINDIR}")
install(TARGETS chutectl chute-load DESTINATION "${CMAKE_INSTALL_BINDIR}")

# The unit names /usr/sbin/chuted and /etc/chute/chute.toml; another prefix (chosen when
# configuring: -DCMAKE_INSTALL_PREFIX=...) gets a copy that names its own paths.
set(_chute_unit "${CMAKE_SOURCE_DIR}/deploy/chuted.service")
if(NOT CMAKE_INSTALL_FULL_SBINDIR STREQUAL "/usr/sbin" OR
   NOT CMAKE_INSTALL_FULL_SYSCONFDIR STREQUAL "/etc")
  file(READ "${_chute_unit}" _chute_unit_text)
  string(REPLACE "/usr/sbin/chuted" "${CMAKE_INSTALL_FULL_SBINDIR}/chuted" _chute_unit_text
         "${_chute_unit_text}")
  string(REPLACE "/etc/chute/chute.toml" "${CMAKE_INSTALL_FULL_SYSCONFDIR}/chute/chute.toml"
         _chute_unit_text "${_chute_unit_text}")
  set(_chute_unit "${CMAKE_BINARY_DIR}/deploy/chuted.service")
  file(WRITE "${_chute_unit}" "${_chute_unit_text}")
endif()
install(FILES "${_chute_unit}" DESTINATION "${CHUTE_SYSTEMD_UNIT_DIR}")
install(FILES deploy/chute.sysusers DESTINATION "${CHUTE_SYSUSERS_DIR}" RENAME chute.conf)
install(FILES deploy/chute.tmpfiles DESTINATION "${CHUTE_TMPFILES_DIR}" RENAME chute.conf)
# The example configuration (a conffile in the package). The directories it names are made
# by tmpfiles.d at install time, not here, so that their owner can be the chute user.
install(FILES deploy/chute.toml DESTINATION "${CMAKE_INSTALL_FULL_SYSCONFDIR}/chute")
install(FILES docs/operations.md docs/fleet.md DESTINATION "${CMAKE_INSTALL_DOCDIR}")
# HAProxy in front of a fleet (docs/fleet.md): examples, copied by hand to /etc/haproxy/.
install(FILES deploy/haproxy/haproxy.cfg deploy/haproxy/chute-421.lua
  DESTINATION "${CMAKE_INSTALL_DOCDIR}/examples/haproxy")

# Man pages from docs/man/*.scd, part of `all` when scdoc is found.
find_program(SCDOC_EXECUTABLE scdoc)
set(_chute_man_pages chuted.8 chutectl.8 chute.toml.5 chute-load.1)
if(SCDOC_EXECUTABLE)
  set(_chute_man_outputs "")
  foreach(page IN LISTS _chute_man_pages)
    string(REGEX REPLACE ".*\\.([0-9])$" "\\1" section "${page}")
    # Compressed, as Debian installs man pages (gzip -n: no name or time, reproducible).
    set(out "${CMAKE_BINARY_DIR}/man/${page}.gz")
    add_custom_command(OUTPUT "${out}"
      COMMAND ${CMAKE_COMMAND} -E make_directory "${CMAKE_BINARY_DIR}/man"
      COMMAND sh -c "\"$0\" < \"$1\" > \"$2.tmp\" && gzip -9n < \"$2.tmp\" > \"$2\" && rm \"$2.tmp\""
              "${SCDOC_EXECUTABLE}"
              "${CMAKE_SOURCE_DIR}/docs/man/${page}.scd" "${out}"
      DEPENDS "${CMAKE_SOURCE_DIR}/docs/man/${page}.scd"
      COMMENT "scdoc ${page}" VERBATIM)
    list(APPEND _chute_man_outputs "${out}")
    install(FILES "${out}" DESTINATION "${CMAKE_INSTALL_MANDIR}/man${section}")
  endforeach()
  add_custom_target(man ALL DEPENDS ${_chute_man_outputs})
else()
  message(STATUS "scdoc not found: no man pages (tools/install-deps.sh installs it); "
                 "the Debian package needs them")
endif()

# The Debian package: the same install rules, packed by CPack DEB.
set(CPACK_GENERATOR "DEB")
set(CPACK_PACKAGE_NAME "chute")
set(CPACK_PACKAGE_VENDOR "chute")
set(CPACK_PACKAGE_CONTACT "chute maintainers <root@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "high-volume internal mail relay (HVE semantics)")
set(CPACK_PACKAGE_DESCRIPTION
    "chute accepts mail from applications and devices over authenticated SMTP (STARTTLS,\n"
    "implicit TLS, AUTH PLAIN/LOGIN/XOAUTH2) and delivers it to mailboxes inside the same\n"
    "organisation (Maildir, LMTP or an SMTP smarthost), with the semantics of Microsoft 365\n"
    "High Volume Email accounts. It answers 250 only once a message is fsynced in its spool.")
string(REPLACE ";" "" CPACK_PACKAGE_DESCRIPTION "${CPACK_PACKAGE_DESCRIPTION}")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION "mail")
set(CPACK_DEBIAN_PACKAGE_PRIORITY "optional")
# Depends: the shared libraries' packages, found by dpkg-shlibdeps from the binaries; then what
# the maintainer scripts run.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "systemd | adduser")
# Recommends: delivery over STARTTLS verifies the target against the system's CAs by default
# ([delivery] tls_ca_file); chuted does not start with lmtp/smtp and TLS when the file is gone.
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "ca-certificates")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    "${CMAKE_SOURCE_DIR}/deploy/debian/conffiles;${CMAKE_SOURCE_DIR}/deploy/debian/postinst;${CMAKE_SOURCE_DIR}/deploy/debian/prerm;${CMAKE_SOURCE_DIR}/deploy/debian/postrm")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_PACKAGE_DIRECTORY "${CMAKE_BINARY_DIR}")
set(CPACK_PACKAGING_INSTALL_PREFIX "${CMAKE_INSTALL_PREFIX}")
set(CPACK_STRIP_FILES ON)
include(CPack)

set(_chute_deb_deps chuted chutectl chute-load)
if(SCDOC_EXECUTABLE)
  list(APPEND _chute_deb_deps man)
  add_custom_target(deb
    COMMAND ${CMAKE_CPACK_COMMAND} -G DEB --config "${CMAKE_BINARY_DIR}/CPackConfig.cmake"
    WORKING_DIRECTORY "${CMAKE_BINARY_DIR}"
    COMMENT "Debian package (cpack -G DEB)" VERBATIM)
  add_dependencies(deb ${_chute_deb_deps})
else()
  add_custom_target(deb
    COMMAND ${CMAKE_COMMAND} -E echo "deb: scdoc is needed for the man pages; run tools/install-deps.sh"
    COMMAND ${CMAKE_COMMAND} -E false VERBATIM)
endif()
unset(_chute_boringssl_dir)
unset(_chute_unit)
