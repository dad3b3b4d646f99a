# A stand-in for nixpkgs in the tests: there is no nixpkgs (and no network) on the test machines.
# Every "package" is a tiny derivation whose bin/ holds symlinks to the host's own tools, which works
# because the tests build with `--option sandbox false`. Only the attributes the generated fetchurl
# expressions use are provided: bash, coreutils, curl, gnugrep, gnused, gnutar, cacert.
{ system ? builtins.currentSystem }:
let
  linkTools = name: tools: derivation {
    inherit name system;
    builder = "/bin/sh";
    args = [ "-c" ''
      set -e
      /bin/mkdir -p "$out/bin"
      for t in ${builtins.concatStringsSep " " tools}; do
        /bin/ln -s "$t" "$out/bin/$(/usr/bin/basename "$t")"
      done
    '' ];
  };
in
{
  bash = linkTools "stub-bash" [ "/bin/bash" ];
  coreutils = linkTools "stub-coreutils" [
    "/bin/cat" "/bin/cp" "/bin/ln" "/bin/ls" "/bin/mkdir" "/bin/mv" "/bin/rm" "/bin/chmod"
    "/usr/bin/head" "/usr/bin/tail" "/usr/bin/tr" "/usr/bin/env" "/usr/bin/sha256sum" "/usr/bin/basename"
  ];
  curl = linkTools "stub-curl" [ "/usr/bin/curl" ];
  gnugrep = linkTools "stub-gnugrep" [ "/bin/grep" ];
  gnused = linkTools "stub-gnused" [ "/bin/sed" ];
  gnutar = linkTools "stub-gnutar" [ "/bin/tar" ];
  cacert = derivation {
    name = "stub-cacert";
    inherit system;
    builder = "/bin/sh";
    args = [ "-c" ''
      /bin/mkdir -p "$out/etc/ssl/certs" &&
      /bin/ln -s /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/ca-bundle.crt"
    '' ];
  };
}
