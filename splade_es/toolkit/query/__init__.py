"""Query side: a query vector becomes the engine's exact query, hits come back explained.

``forms`` builds the engine-native query DSL, ``fusion`` combines BM25 with it (hybrid),
``searcher`` runs searches against one index and explains each hit.
"""

from splade_es.toolkit.query.forms import FORMS, supported_forms, vector_query
from splade_es.toolkit.query.searcher import Contribution, Hit, IndexMeta, Searcher, SearchResult

__all__ = ["FORMS", "Contribution", "Hit", "IndexMeta", "SearchResult", "Searcher", "supported_forms", "vector_query"]
