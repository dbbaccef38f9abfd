"""ops.properties: TorchServe's config.properties read back as written, and as Java reads it."""

import shutil
import subprocess

import pytest

from ops import properties
from ops.instance import read_properties, write_properties

# Values a config can hold: a regex with its backslashes (allowed_urls), colons and `=` (addresses, vmargs),
# spaces inside, at either end and alone, a Windows path, control characters and text beyond ASCII.
AWKWARD = {
    "allowed_urls": r"file:///tmp/store\.v1/[A-Za-z0-9_]+[.]mar|C:\models\x=1",
    "vmargs": "-XX:+UseParallelGC -Dkey=value:other",
    "spaced": "  leading and trailing  ",
    "blank": " ",
    "empty": "",
    "backslashes": "\\\\ \\ \\n \\u0041 \\",
    "lines": "one\ntwo\r\tthree\f",
    "comment_like": "# not a comment ! nor this",
    "unicode": "naïve — 数字 🙂",
    "key with spaces=and:separators": "value",
    "#hash_key": "x",
    "!bang_key": "y",
}


def test_a_value_with_backslashes_colons_equals_and_spaces_round_trips(tmp_path):
    path = tmp_path / "c.properties"
    write_properties(path, AWKWARD)
    assert read_properties(path) == AWKWARD
    assert path.read_text().isascii()


def test_plain_settings_are_written_as_they_were():
    """Addresses and numbers need no escape: the file TorchServe reads is what it always was."""
    assert properties.dumps({"inference_address": "http://127.0.0.1:8080", "job_queue_size": "1000"}) == (
        "inference_address=http://127.0.0.1:8080\njob_queue_size=1000\n"
    )
    assert properties.dumps({"allowed_urls": r"file:///a\.b"}) == "allowed_urls=file:///a\\\\.b\n"


def test_the_reader_reads_what_javas_properties_reads():
    text = (
        "# a comment\n"
        "! another\n"
        "   \n"
        "  indented = value with = and : inside  \n"
        "colon:separated\n"
        "blank separated\n"
        "alone\n"
        "continued = first \\\n"
        "      second\\\\\n"
        "escaped\\ key\\:x = \\ lead\\u00e9\\t\n"
        "later = 1\n"
        "later = 2\n"
    )
    assert properties.loads(text) == {
        "indented": "value with = and : inside  ",
        "colon": "separated",
        "blank": "separated",
        "alone": "",
        "continued": "first second\\",
        "escaped key:x": " leadé\t",
        "later": "2",
    }
    with pytest.raises(ValueError):
        properties.loads("bad = \\u12\n")


JAVA_READER = """
import java.io.FileInputStream;
import java.util.Properties;
import java.util.TreeSet;

public class ReadProperties {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        try (FileInputStream in = new FileInputStream(args[0])) { props.load(in); }
        StringBuilder out = new StringBuilder();
        for (String key : new TreeSet<>(props.stringPropertyNames())) {
            for (String text : new String[] {key, props.getProperty(key)}) {
                for (char c : text.toCharArray()) out.append(String.format("%04x", (int) c));
                out.append("\\n");
            }
        }
        System.out.print(out);
    }
}
"""


@pytest.mark.skipif(shutil.which("java") is None or shutil.which("javac") is None, reason="needs a JDK")
def test_java_reads_the_written_file_as_written(tmp_path):
    """TorchServe's frontend reads the config with java.util.Properties.load: it must see the same values."""
    path = tmp_path / "c.properties"
    write_properties(path, AWKWARD)
    (tmp_path / "ReadProperties.java").write_text(JAVA_READER)
    run = subprocess.run(
        ["java", str(tmp_path / "ReadProperties.java"), str(path)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    units = [bytes.fromhex(line).decode("utf-16-be", "surrogatepass") for line in lines]
    assert dict(zip(units[::2], units[1::2], strict=True)) == AWKWARD
