// helmref renders one luet build.yaml the way luet 0.20 does, as a reference for cosbuild's
// own Helm engine (tests/test_helm_differential.py). It replicates, with the same libraries
// Debian packages (sprig, mergo, go-yaml v2, ghodss/yaml), these luet 0.20.0 / Helm v3.3.4
// functions:
//
//	luet pkg/compiler/compiler.go  templatePackage  (the values of a definition or a collection stanza)
//	luet pkg/helpers/helm.go       UnMarshalValues, RenderFiles, RenderHelm
//	helm pkg/chartutil/coalesce.go CoalesceValues (for one chart without dependencies)
//	helm pkg/engine/engine.go      renderWithReferences, include, tpl, required, error cleanup
//	helm pkg/engine/funcs.go       funcMap (sprig minus env/expandenv, toYaml, fromJson, ...)
//
// Input, a JSON object on stdin:
//
//	{"sources": [["templates/a.yaml", "..."], ["build.yaml", "..."]],  (concatenated, in order)
//	 "definition": "<text of definition.yaml, or of collection.yaml>",
//	 "collection": {"name": "", "category": "", "version": ""},        (optional: pick a stanza)
//	 "values_files": ["<text of a --values file>", ...],                (optional, leftmost first)
//	 "output": "render" | "values"}                                     (optional; values: .Values as YAML)
//
// Output: the rendered text on stdout; an error: its message on stderr, exit status 1.
// Build: GO111MODULE=off GOPATH=/usr/share/gocode go build (Debian's -dev packages).
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"github.com/ghodss/yaml"
	"github.com/imdario/mergo"
	yamlv2 "gopkg.in/yaml.v2"
)

type request struct {
	Sources     [][2]string        `json:"sources"`
	Definition  string             `json:"definition"`
	Collection  *map[string]string `json:"collection"`
	ValuesFiles []string           `json:"values_files"`
	Output      string             `json:"output"`
}

func main() {
	var req request
	raw, err := io.ReadAll(os.Stdin)
	if err == nil {
		err = json.Unmarshal(raw, &req)
	}
	if err != nil {
		fail(fmt.Errorf("helmref: bad request: %w", err))
	}
	values, err := luetValues(req)
	if err != nil {
		fail(err)
	}
	if req.Output == "values" {
		out, err := yamlv2.Marshal(values)
		if err != nil {
			fail(err)
		}
		os.Stdout.Write(out)
		return
	}
	text := ""
	for _, s := range req.Sources { // RenderHelm: "We slurp all the files into one", no separator
		text += s[1]
	}
	out, err := render(text, values)
	if err != nil {
		fail(fmt.Errorf("while rendering template: %w", err))
	}
	fmt.Print(out)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

// luetValues is templatePackage + RenderFiles + RenderHelm's CoalesceValues: the map the
// template sees as .Values.
func luetValues(req request) (map[string]interface{}, error) {
	// FromPackage: the values files, merged
	dst, err := unmarshalValues(req.ValuesFiles)
	if err != nil {
		return nil, err
	}
	if req.Collection != nil {
		// the stanza goes through YAML→JSON (pkg.GetRawPackages): numbers become float64
		var doc struct {
			Packages []map[string]interface{} `json:"packages"`
		}
		if err := yaml.Unmarshal([]byte(req.Definition), &doc); err != nil {
			return nil, fmt.Errorf("getting raw packages: %w", err)
		}
		raw := map[string]interface{}{}
		c := *req.Collection
		for _, p := range doc.Packages {
			if p["name"] == c["name"] && p["category"] == c["category"] && p["version"] == c["version"] {
				raw = p
				break
			}
		}
		// the values first, then the stanza fills what they lack (mergo without override;
		// nested maps are shared with dst, so they are filled there too)
		td := map[string]interface{}{}
		if err := mergo.Merge(&td, dst); err != nil {
			return nil, err
		}
		if err := mergo.Merge(&td, raw); err != nil {
			return nil, err
		}
		return coalesce(td, dst), nil
	}
	// A definition: luet writes the merged values to a temporary YAML file and reads it back
	// together with the values files (leftmost first). luet's UnMarshalValues reverses its
	// argument in place, so with two or more files luet's precedence flips on every call
	// (FINDINGS-helm.md); this reference keeps the documented one: the rightmost file wins.
	tmp, err := yamlv2.Marshal(dst)
	if err != nil {
		return nil, err
	}
	dst, err = unmarshalValues(append([]string{string(tmp)}, req.ValuesFiles...))
	if err != nil {
		return nil, err
	}
	definition := map[string]interface{}{}
	if err := yamlv2.Unmarshal([]byte(req.Definition), &definition); err != nil {
		return nil, fmt.Errorf("unmarshalling values: %w", err)
	}
	return coalesce(definition, dst), nil
}

// unmarshalValues is helpers.UnMarshalValues: right to left, each file fills what the ones
// to its right did not set (mergo.Merge without override: a key whose value is empty — "",
// 0, false, an empty list or map — counts as unset).
func unmarshalValues(files []string) (map[string]interface{}, error) {
	dst := map[string]interface{}{}
	for i := len(files) - 1; i >= 0; i-- {
		current := map[string]interface{}{}
		if err := yamlv2.Unmarshal([]byte(files[i]), &current); err != nil {
			return nil, fmt.Errorf("rendering file: %w", err)
		}
		if err := mergo.Merge(&dst, current); err != nil {
			return nil, fmt.Errorf("merging values file: %w", err)
		}
	}
	return dst, nil
}

// coalesce is RenderHelm's chartutil.CoalesceValues(chart{Values: {"Values": values}},
// {"Values": d})["Values"]: d wins; its nil deletes the key; only map[string]interface{}
// tables merge recursively (go-yaml v2's nested map[interface{}]interface{} do not).
func coalesce(values, d map[string]interface{}) map[string]interface{} {
	return coalesceTables(d, values)
}

func coalesceTables(dst, src map[string]interface{}) map[string]interface{} {
	for key, val := range src {
		if dv, ok := dst[key]; ok && dv == nil {
			delete(dst, key)
		} else if !ok {
			dst[key] = val
		} else if sv, ok := val.(map[string]interface{}); ok {
			if dt, ok := dv.(map[string]interface{}); ok {
				coalesceTables(dt, sv)
			}
		}
	}
	return dst
}

// ---------------------------------------------------------------- Helm's engine (non-strict)

const (
	templateName     = "templates" // ChartFileS names the one concatenated file so
	warnStartDelim   = "HELM_ERR_START"
	warnEndDelim     = "HELM_ERR_END"
	recursionMaxNums = 1000
)

var warnRegex = regexp.MustCompile(warnStartDelim + `(.*)` + warnEndDelim)

// render is engine.Render for a chart with one template and no dependencies.
func render(text string, values map[string]interface{}) (string, error) {
	top := map[string]interface{}{ // recAllTpls' "next" for a root chart with empty metadata
		"Chart":        map[string]interface{}{"Name": "", "Version": ""},
		"Release":      nil,
		"Capabilities": nil,
		"Values":       values,
	}
	tpls := map[string]renderable{templateName: {text, top, templateName}}
	out, err := renderWithReferences(tpls, tpls)
	return out[templateName], err
}

type renderable struct {
	tpl      string
	vals     map[string]interface{}
	basePath string
}

func renderWithReferences(tpls, referenceTpls map[string]renderable) (rendered map[string]string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("rendering template failed: %v", r)
		}
	}()
	t := template.New("gotpl")
	t.Option("missingkey=zero")
	initFunMap(t, referenceTpls)
	// one template in each map here, so Helm's sort by path depth does not matter
	for name, r := range tpls {
		if _, err := t.New(name).Parse(r.tpl); err != nil {
			return map[string]string{}, cleanupParseError(name, err)
		}
	}
	// a tpl call's text takes the main template's name, so the main text (and the
	// templates it defines) is not parsed into tpl's template set
	for name, r := range referenceTpls {
		if t.Lookup(name) == nil {
			if _, err := t.New(name).Parse(r.tpl); err != nil {
				return map[string]string{}, cleanupParseError(name, err)
			}
		}
	}
	rendered = map[string]string{}
	for name, r := range tpls {
		vals := r.vals
		vals["Template"] = map[string]interface{}{"Name": name, "BasePath": r.basePath}
		var buf strings.Builder
		if err := t.ExecuteTemplate(&buf, name, vals); err != nil {
			return map[string]string{}, cleanupExecError(name, err)
		}
		rendered[name] = strings.ReplaceAll(buf.String(), "<no value>", "")
	}
	return rendered, nil
}

func initFunMap(t *template.Template, referenceTpls map[string]renderable) {
	funcs := funcMap()
	includedNames := map[string]int{}
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var buf strings.Builder
		if v, ok := includedNames[name]; ok {
			if v > recursionMaxNums {
				return "", fmt.Errorf("rendering template has a nested reference name: %s: unable to execute template", name)
			}
			includedNames[name]++
		} else {
			includedNames[name] = 1
		}
		err := t.ExecuteTemplate(&buf, name, data)
		includedNames[name]--
		return buf.String(), err
	}
	funcs["tpl"] = func(tpl string, vals map[string]interface{}) (string, error) {
		basePath, err := pathValue(vals, "BasePath")
		if err != nil {
			return "", fmt.Errorf("cannot retrieve Template.Basepath from values inside tpl function: %s: %w", tpl, err)
		}
		name, err := pathValue(vals, "Name")
		if err != nil {
			return "", fmt.Errorf("cannot retrieve Template.Name from values inside tpl function: %s: %w", tpl, err)
		}
		templates := map[string]renderable{name: {tpl, vals, basePath}}
		result, err := renderWithReferences(templates, referenceTpls)
		if err != nil {
			return "", fmt.Errorf("error during tpl function execution for %q: %w", tpl, err)
		}
		return result[name], nil
	}
	funcs["required"] = func(warn string, val interface{}) (interface{}, error) {
		if val == nil {
			return val, errors.New(warnStartDelim + warn + warnEndDelim)
		} else if s, ok := val.(string); ok && s == "" {
			return val, errors.New(warnStartDelim + warn + warnEndDelim)
		}
		return val, nil
	}
	t.Funcs(funcs)
}

// pathValue is chartutil.Values.PathValue("Template.<key>") for a string.
func pathValue(vals map[string]interface{}, key string) (string, error) {
	tmpl, ok := vals["Template"].(map[string]interface{})
	if !ok {
		return "", errors.New("no table named \"Template\"")
	}
	v, ok := tmpl[key].(string)
	if !ok {
		return "", fmt.Errorf("no value for key \"Template.%s\"", key)
	}
	return v, nil
}

var sprig32Only = []string{
	"add1f", "addf", "all", "any", "bcrypt", "chunk", "dig", "divf", "genCAWithKey",
	"genSelfSignedCertWithKey", "genSignedCertWithKey", "maxf", "minf", "mulf", "mustChunk",
	"mustFromJson", "osBase", "osClean", "osDir", "osExt", "osIsAbs", "randBytes", "randInt",
	"regexQuoteMeta", "subf",
}

func funcMap() template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	// Debian has sprig 3.2; luet 0.20 vendors 3.1.0, which has the same functions but these
	for _, name := range sprig32Only {
		delete(f, name)
	}
	extra := template.FuncMap{
		"toYaml":        toYAML,
		"fromYaml":      fromYAML,
		"fromYamlArray": fromYAMLArray,
		"toJson":        toJSON,
		"fromJson":      fromJSON,
		"fromJsonArray": fromJSONArray,
		// Helm's placeholder: a chart without a cluster connection looks up nothing
		"lookup": func(string, string, string, string) (map[string]interface{}, error) {
			return map[string]interface{}{}, nil
		},
	}
	for k, v := range extra {
		f[k] = v
	}
	return f
}

// sigs.k8s.io/yaml (Helm's) is a fork of ghodss/yaml with the same Marshal: JSON first, so a
// value JSON cannot encode (a go-yaml map[interface{}]interface{}) gives "".
func toYAML(v interface{}) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(data), "\n")
}

func fromYAML(str string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := yaml.Unmarshal([]byte(str), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func fromYAMLArray(str string) []interface{} {
	a := []interface{}{}
	if err := yaml.Unmarshal([]byte(str), &a); err != nil {
		a = []interface{}{err.Error()}
	}
	return a
}

func toJSON(v interface{}) string {
	data, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(data)
}

func fromJSON(str string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := json.Unmarshal([]byte(str), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func fromJSONArray(str string) []interface{} {
	a := []interface{}{}
	if err := json.Unmarshal([]byte(str), &a); err != nil {
		a = []interface{}{err.Error()}
	}
	return a
}

func cleanupParseError(filename string, err error) error {
	tokens := strings.Split(err.Error(), ": ")
	if len(tokens) == 1 {
		return fmt.Errorf("parse error in (%s): %s", filename, err)
	}
	return fmt.Errorf("parse error at (%s): %s", tokens[1], tokens[len(tokens)-1])
}

func cleanupExecError(filename string, err error) error {
	if _, isExecError := err.(template.ExecError); !isExecError {
		return err
	}
	tokens := strings.SplitN(err.Error(), ": ", 3)
	if len(tokens) != 3 {
		return fmt.Errorf("execution error in (%s): %s", filename, err)
	}
	if parts := warnRegex.FindStringSubmatch(tokens[2]); len(parts) >= 2 {
		return fmt.Errorf("execution error at (%s): %s", tokens[1], parts[1])
	}
	return err
}
