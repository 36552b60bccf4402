# Installs the library, its public headers and a CMake package so that another project can
#   find_package(kjit REQUIRED)
#   target_link_libraries(app PRIVATE kjit::kjit)
include(CMakePackageConfigHelpers)

set(KJIT_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/kjit)
install(TARGETS kjit EXPORT kjitTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/runtime/include/kjit
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT kjitTargets NAMESPACE kjit:: DESTINATION ${KJIT_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/kjitConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/kjitConfig.cmake
                              INSTALL_DESTINATION ${KJIT_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/kjitConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/kjitConfig.cmake ${PROJECT_BINARY_DIR}/kjitConfigVersion.cmake
        DESTINATION ${KJIT_CMAKE_DIR})
