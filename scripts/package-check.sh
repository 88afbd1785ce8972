#!/usr/bin/env bash
# Build and check the distribution packages (.ci/run calls this):
#  - the .deb, built natively in a Debian 13 (trixie) chroot, checked with
#    lintian, installed there with apt's real dependency resolution, then
#    `nmbalance --version`, `nmbalance check` on the shipped default config,
#    the file list, and the unit tests against Debian 13's library versions;
#  - the .rpm spec, smoke-built here with `rpmbuild --nodeps`, and its file list.
# The chroot's base is cached in /var/cache/nmbalance-ci when the machine is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=/var/cache/nmbalance-ci
BASE=$CACHE/trixie-minbase.tar
VERSION=$(python3 -c 'import re,sys; print(re.search(r"__version__ = \"(.+)\"", open("nmbalance/__init__.py").read()).group(1))')

host_tools=()
command -v debootstrap >/dev/null || host_tools+=(debootstrap)
command -v rpmbuild >/dev/null || host_tools+=(rpm)
if [ "${#host_tools[@]}" -gt 0 ]; then
    echo "package: installing ${host_tools[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${host_tools[@]}" >/dev/null
fi

WORK=$(mktemp -d /var/tmp/nmbalance-pkg.XXXXXX)
ROOTFS=$WORK/root
cleanup() { rm -rf --one-file-system "$WORK"; }
trap cleanup EXIT

# --- a Debian 13 chroot ------------------------------------------------------------------
mkdir -p "$ROOTFS" "$CACHE"
if [ -f "$BASE" ]; then
    tar -C "$ROOTFS" -xf "$BASE"
else
    echo "package: debootstrap trixie (cached afterwards in $BASE)"
    debootstrap --variant=minbase trixie "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
        { tail -20 "$WORK/debootstrap.log"; exit 1; }
    tar -C "$ROOTFS" -cf "$BASE.tmp" . && mv "$BASE.tmp" "$BASE"
fi
printf '#!/bin/sh\nexit 101\n' > "$ROOTFS/usr/sbin/policy-rc.d"
chmod 755 "$ROOTFS/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf" 2>/dev/null || true

# The tracked source tree, as a clean clone has it.
mkdir -p "$ROOTFS/build/nmbalance-$VERSION"
git ls-files -z | tar --null -T - -cf - | tar -C "$ROOTFS/build/nmbalance-$VERSION" -xf -

cat > "$ROOTFS/build/run.sh" <<EOF
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends debhelper dh-python pybuild-plugin-pyproject \
    python3-all python3-setuptools groff-base lintian python3-pytest python3-pytest-timeout \
    python3-hypothesis python3-jsonschema make \
    >/dev/null
cd /build/nmbalance-$VERSION
# -d: the build dependencies are installed above; build-essential (a C compiler)
# is not needed for this architecture-independent package.
dpkg-buildpackage -us -uc -b -d >/build/dpkg-buildpackage.log 2>&1 || { tail -40 /build/dpkg-buildpackage.log; exit 1; }
cd /build
echo "package: lintian"
status=0
lintian --fail-on error,warning --display-info nmbalance_${VERSION}_all.deb >/build/lintian.txt 2>&1 || status=\$?
grep -v "^running with root" /build/lintian.txt || true
[ "\$status" -eq 0 ] || { echo "package: lintian found errors or warnings"; exit 1; }
echo "package: apt-get install ./nmbalance_${VERSION}_all.deb"
apt-get install -y -q ./nmbalance_${VERSION}_all.deb >/build/install.log 2>&1 || { tail -30 /build/install.log; exit 1; }
nmbalance --version
nmbalance check
dpkg -L nmbalance > /build/files
for f in /usr/bin/nmbalance /usr/lib/systemd/system/nmbalance.service \
         /usr/share/dbus-1/system.d/io.github.nmbalance1.conf \
         /usr/lib/NetworkManager/dispatcher.d/90-nmbalance \
         /usr/lib/networkd-dispatcher/routable.d/50-nmbalance \
         /usr/lib/networkd-dispatcher/no-carrier.d/50-nmbalance \
         /etc/nmbalance/nmbalance.toml /usr/share/man/man8/nmbalance.8.gz \
         /usr/share/man/man5/nmbalance.toml.5.gz /usr/share/bash-completion/completions/nmbalance; do
    grep -qx "\$f" /build/files || { echo "package: \$f is missing from the .deb"; exit 1; }
done
grep -qx /etc/nmbalance/nmbalance.toml /var/lib/dpkg/info/nmbalance.conffiles
echo "package: installed versions:"
dpkg-query -W python3 python3-pydantic python3-pyroute2 python3-nftables python3-icmplib python3-dbus-fast python3-dnspython python3-prometheus-client nftables
# The unit tests, against the installed package and Debian 13's libraries.
mkdir -p /build/t
cp -r /build/nmbalance-$VERSION/tests /build/nmbalance-$VERSION/docs /build/nmbalance-$VERSION/scripts \
      /build/nmbalance-$VERSION/examples \
      /build/nmbalance-$VERSION/pyproject.toml /build/nmbalance-$VERSION/README.md /build/t/
cd /build/t
python3 -m pytest -q -p no:cacheprovider tests/unit
python3 -c 'import nmbalance, sys; assert nmbalance.__file__.startswith("/usr/lib/python3/"), nmbalance.__file__'
EOF

echo "package: building the .deb in a Debian 13 chroot"
unshare -m -- bash -c '
    set -e
    mount -t proc proc "$1/proc"
    mount --rbind /dev "$1/dev"
    chroot "$1" /bin/bash /build/run.sh
' _ "$ROOTFS"
mkdir -p "$SRC/dist"
cp "$ROOTFS"/build/nmbalance_*_all.deb "$SRC/dist/"

# --- the rpm spec, smoke-built here ------------------------------------------------------
echo "package: rpmbuild (smoke build with --nodeps and fallback macros)"
RPMTOP=$WORK/rpm
mkdir -p "$RPMTOP"/{SOURCES,SPECS,BUILD,RPMS,SRPMS}
git archive --format=tar.gz --prefix="nmbalance-$VERSION/" -o "$RPMTOP/SOURCES/nmbalance-$VERSION.tar.gz" HEAD
# With the distro's own python3 first on PATH, as a packager's machine has it.
env PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    rpmbuild -bb --nodeps --define "_topdir $RPMTOP" rpm/nmbalance.spec >"$WORK/rpmbuild.log" 2>&1 ||
    { tail -40 "$WORK/rpmbuild.log"; exit 1; }
RPM=$(ls "$RPMTOP"/RPMS/noarch/nmbalance-*.rpm)
rpm -qlp "$RPM" > "$WORK/rpm-files"
# (man pages are compressed only where the distro's rpm macros do it)
for f in /usr/bin/nmbalance /usr/lib/systemd/system/nmbalance.service \
         /usr/share/dbus-1/system.d/io.github.nmbalance1.conf \
         /usr/lib/NetworkManager/dispatcher.d/90-nmbalance \
         /usr/lib/networkd-dispatcher/routable.d/50-nmbalance \
         /etc/nmbalance/nmbalance.toml '/usr/share/man/man8/nmbalance.8(.gz)?' \
         '/usr/share/man/man5/nmbalance.toml.5(.gz)?' /usr/share/bash-completion/completions/nmbalance; do
    grep -qxE "$f" "$WORK/rpm-files" || { echo "package: $f is missing from the .rpm"; cat "$WORK/rpm-files"; exit 1; }
done
grep -q "^/usr/lib/python3.*/site-packages/nmbalance/cli.py$" "$WORK/rpm-files"
rpm -qp --configfiles "$RPM" | grep -qx /etc/nmbalance/nmbalance.toml
cp "$RPM" "$SRC/dist/"
echo "package: OK ($(cd "$SRC/dist" && ls | tr '\n' ' '))"
