"""A small tree that exercises every build keyword, for the integration tests."""

BOOTSTRAP = """\
bootstrap:
  suite: bookworm
  variant: minbase
  packages: [libcap2-bin]
"""

SMALL_TREE = {
    "tree/base/definition.yaml": "name: base\ncategory: distro\nversion: '1'\n",
    "tree/base/build.yaml": BOOTSTRAP + """\
steps:
  - echo base > /etc/base-marker
  - cp /usr/bin/true /usr/local/bin/capped && setcap cap_net_raw+ep /usr/local/bin/capped
unpack: true
excludes:
  - ^/luetbuild
  - ^/var/cache/
  - ^/var/lib/apt/lists/
""",
    "tree/app/definition.yaml": """\
name: app
category: apps
version: '1.0'
requires:
  - {name: base, category: distro}
""",
    "tree/app/build.yaml": """\
requires:
  - {name: base, category: distro}
env:
  - GREETING=hello
prelude:
  - mkdir -p /prelude-only && echo p > /prelude-only/file
steps:
  - mkdir -p /usr/share/app && echo "$GREETING $PACKAGE_NAME $PACKAGE_VERSION $PACKAGE_CATEGORY {{ values.flag | default('none') }}" > /usr/share/app/info
  - cp hello.sh /usr/bin/hello && chmod 755 /usr/bin/hello
  - ln /usr/bin/hello /usr/bin/hello-link
  - echo changed >> /etc/base-marker
""",
    "tree/app/hello.sh": "#!/bin/sh\necho hello\n",
    "tree/app/finalize.yaml": "install:\n  - echo finalized $(cat /etc/base-marker) > /var/lib/app-finalized\n",
    "tree/fin/definition.yaml": "name: fin\ncategory: system\nversion: '1'\n",
    "tree/fin/build.yaml": """\
requires:
  - {name: app, category: apps}
requires_final_images: true
steps:
  - cat /usr/share/app/info > /fin-info
unpack: true
includes:
  - ^/fin-info$
  - ^/usr/bin/hello
  - ^/etc/base-marker$
""",
    "tree/pd/definition.yaml": "name: pd\ncategory: apps\nversion: '1'\n",
    "tree/pd/build.yaml": """\
requires:
  - {name: base, category: distro}
copy:
  - package: {name: app, category: apps}
    source: /usr/share/app/info
    destination: /out/info
steps:
  - mkdir -p /out/etc && echo pd > /out/etc/pd
package_dir: /out
excludes:
  - ^/etc/skip
""",
    "tree/meta/definition.yaml": "name: meta\ncategory: virtual\nversion: '1'\n",
}
