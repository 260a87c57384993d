package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The README (and every other Markdown document) cites only documents the repository has: it cited a
// product contract that is not in it.
func TestDocumentsCiteOnlyFilesInTheRepository(t *testing.T) {
	cited := regexp.MustCompile("[A-Za-z0-9_./-]+\\.md\\b")
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || d.Name() == ".git" || d.Name() == "data" || d.Name() == "demo-data") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".md") {
			return nil
		}
		body, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, name := range cited.FindAllString(string(body), -1) {
			if strings.Contains(name, "://") || strings.HasPrefix(name, ".") && !strings.HasPrefix(name, "./") {
				continue
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(path), name)); err == nil {
				continue
			}
			if _, err := os.Stat(name); err != nil {
				t.Errorf("%s cites %s, which is not in the repository", path, name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// What a user makes by following the README (the binary, dd.toml with the token, the demo's data) is
// never committed by accident.
func TestGitIgnoresWhatTheREADMEHasYouMake(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	if err := exec.Command("git", "rev-parse", "--git-dir").Run(); err != nil {
		t.Skip("not in a git checkout")
	}
	for _, p := range []string{"dd", "dd.toml", "demo-data/dd.log", "bin/dd", "data/MANIFEST"} {
		if err := exec.Command("git", "check-ignore", "-q", "--no-index", p).Run(); err != nil {
			t.Errorf("%s is not ignored by .gitignore", p)
		}
	}
}
