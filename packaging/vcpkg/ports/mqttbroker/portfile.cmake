# Header-only: one configuration, nothing compiled.
set(VCPKG_BUILD_TYPE release)

if(DEFINED ENV{MQTTBROKER_PORT_SOURCE_DIR})
  # tests/packaging/vcpkg.sh: the checkout under test, so the port is tried offline. The published
  # port has only the vcpkg_from_github() below.
  set(SOURCE_PATH "$ENV{MQTTBROKER_PORT_SOURCE_DIR}")
else()
  # REPO and SHA512 are filled in when the release is published (README, "Packages").
  vcpkg_from_github(
    OUT_SOURCE_PATH SOURCE_PATH
    REPO <owner>/mqttbroker
    REF "v${VERSION}"
    SHA512 0
    HEAD_REF main
  )
endif()

# Feature openssl: the components auth, tls and websocket (mqttbroker::auth, ::tls, ::websocket),
# which the library's CMake build makes wherever it finds OpenSSL. One feature rather than one a
# component: the three need OpenSSL and nothing else, and come together from the build; it is
# named for the dependency it adds, as the Conan recipe's option with_openssl is. With it, OpenSSL
# must be found (vcpkg's openssl port); without it, it must not be, even where the system has one,
# so that the installed config claims no component whose dependency vcpkg did not install.
# Feature sqlite: the component sqlite (mqttbroker::sqlite, the durable storage), on vcpkg's sqlite3
# port, likewise required with the feature and switched off without it. A feature of its own, as
# the Conan recipe's option with_sqlite is: another dependency, for other programs than the
# OpenSSL parts; named for the component, which is the storage's name in the library too.
vcpkg_check_features(OUT_FEATURE_OPTIONS FEATURE_OPTIONS
  FEATURES
    openssl CMAKE_REQUIRE_FIND_PACKAGE_OpenSSL
    sqlite CMAKE_REQUIRE_FIND_PACKAGE_SQLite3
  INVERTED_FEATURES
    openssl CMAKE_DISABLE_FIND_PACKAGE_OpenSSL
    sqlite CMAKE_DISABLE_FIND_PACKAGE_SQLite3
)

vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    ${FEATURE_OPTIONS}
    -DMQTTBROKER_BUILD_TESTS=OFF
    -DMQTTBROKER_BUILD_EXAMPLES=OFF
    -DMQTTBROKER_BUILD_BENCH=OFF
    -DMQTTBROKER_BUILD_FUZZ=OFF
    -DMQTTBROKER_INSTALL=ON
)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(CONFIG_PATH share/cmake/mqttbroker)
# vcpkg keeps share/pkgconfig for .pc files without libraries; ours links the threads library, and
# fmt's through `Requires: fmt` (vcpkg_fixup_pkgconfig checks that fmt.pc is found).
file(MAKE_DIRECTORY "${CURRENT_PACKAGES_DIR}/lib")
file(RENAME "${CURRENT_PACKAGES_DIR}/share/pkgconfig" "${CURRENT_PACKAGES_DIR}/lib/pkgconfig")
vcpkg_fixup_pkgconfig()

# The licence goes to share/mqttbroker/copyright; the copy the install put beside the docs goes.
file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/share/doc")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
