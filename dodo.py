"""doit entry point for this repository: the same tasks as `cosbuild run/list`.

Choose values without editing files: `doit values=values/trixie.yaml list`,
`COSBUILD_FLAVOR=trixie doit`, see README.md.
"""

from doit import get_var

from cosbuild import settings
from cosbuild.tasks import dodo_namespace

globals().update(dodo_namespace(
    doit_vars={s.name: get_var(s.name) for s in settings.SETTINGS if get_var(s.name)}))
